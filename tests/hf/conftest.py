"""Tiny saved transformers models, built once per session (transformers is the [hf] extra)."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers", reason="transformers not installed (the [hf] extra)")

from tests.hf.tiny import save_tiny  # noqa: E402


def _saved(kind: str):
    """A session fixture: ``kind``'s tiny model saved once (tests/hf/tiny.py)."""

    @pytest.fixture(scope="session")
    def folder(tmp_path_factory):
        return save_tiny(kind, tmp_path_factory.mktemp("hf") / kind.replace("_", "-"))

    return folder


qwen3_next_dir = _saved("qwen3_next")
mamba2_dir = _saved("mamba2")
recurrent_gemma_dir = _saved("recurrent_gemma")
mamba_dir = _saved("mamba")  # a recurrence edgegate has no recogniser for


@pytest.fixture(scope="session")
def small_text(tmp_path_factory):
    """A short text file: scoring over it takes seconds, not the whole stdlib corpus."""
    import inspect
    import json as json_module

    path = tmp_path_factory.mktemp("text") / "text.txt"
    path.write_text(inspect.getsource(json_module)[:24_000])
    return path
