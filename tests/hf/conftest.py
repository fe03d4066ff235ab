"""Tiny saved transformers models, built once per session (transformers is the [hf] extra)."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers", reason="transformers not installed (the [hf] extra)")

from tests.hf.tiny import save_tiny  # noqa: E402


@pytest.fixture(scope="session")
def qwen3_next_dir(tmp_path_factory):
    return save_tiny("qwen3_next", tmp_path_factory.mktemp("hf") / "qwen3-next")


@pytest.fixture(scope="session")
def mamba2_dir(tmp_path_factory):
    return save_tiny("mamba2", tmp_path_factory.mktemp("hf") / "mamba2")


@pytest.fixture(scope="session")
def recurrent_gemma_dir(tmp_path_factory):
    return save_tiny("recurrent_gemma", tmp_path_factory.mktemp("hf") / "recurrent-gemma")


@pytest.fixture(scope="session")
def mamba_dir(tmp_path_factory):
    return save_tiny("mamba", tmp_path_factory.mktemp("hf") / "mamba")


@pytest.fixture(scope="session")
def small_text(tmp_path_factory):
    """A short text file: scoring over it takes seconds, not the whole stdlib corpus."""
    import inspect
    import json as json_module

    path = tmp_path_factory.mktemp("text") / "text.txt"
    path.write_text(inspect.getsource(json_module)[:24_000])
    return path
