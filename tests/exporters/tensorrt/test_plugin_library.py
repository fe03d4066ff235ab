"""The plugin library is loaded once per process and every load is checked: TensorRT's
``load_library`` fails when the creators are already registered, and says so only by its result.
The loader here is a plain function standing for ``registry.load_library`` (TensorRT is not
installed on this machine); the logic under test is edgegate's."""

from __future__ import annotations

import pytest

from edgegate.errors import ToolchainFailed
from edgegate.exporters.tensorrt import plugin_library
from edgegate.exporters.tensorrt.plugin_library import load_once, loaded_libraries


@pytest.fixture(autouse=True)
def fresh_process(monkeypatch):
    monkeypatch.setattr(plugin_library, "_LOADED", {})


def test_a_library_is_loaded_once_per_process_by_its_resolved_path(tmp_path, monkeypatch):
    library = tmp_path / "libedgegate_trt_plugins.so"
    library.write_bytes(b"")
    calls = []

    def load(path):
        calls.append(path)
        return object()

    assert load_once(library, load) is True
    monkeypatch.chdir(tmp_path)
    assert load_once("libedgegate_trt_plugins.so", load) is False  # same file, other spelling
    assert calls == [str(library.resolve())] and loaded_libraries() == calls


def test_a_failed_load_is_an_error_naming_the_library_and_is_not_remembered(tmp_path):
    library = tmp_path / "lib.so"
    with pytest.raises(ToolchainFailed, match=r"toolchain failure: .*lib\.so.*load failed"):
        load_once(library, lambda path: None)
    assert loaded_libraries() == []


def test_a_load_that_registers_no_creator_is_an_error_naming_them(tmp_path):
    with pytest.raises(ToolchainFailed, match="GatedDeltaRule are not registered"):
        load_once(tmp_path / "lib.so", lambda path: object(), lambda: ["GatedDeltaRule"])
