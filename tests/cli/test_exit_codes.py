"""Exit codes beyond bad input: edgegate's own failures 70, toolchain failures 3, Ctrl-C 130;
each one line on stderr, `--debug` for the traceback."""

from __future__ import annotations

import shutil

import pytest

from edgegate.errors import InternalError
from tests.conftest import assert_one_line_error


def _raise(exc: BaseException):
    def fail(*args, **kwargs):
        raise exc

    return fail


def test_ctrl_c_during_a_command_exits_130(run_cli, monkeypatch):
    monkeypatch.setattr("edgegate.pipeline.zoo.model_table", _raise(KeyboardInterrupt()))
    assert_one_line_error(run_cli("models"), "interrupted", code=130)


def test_ctrl_c_before_the_command_runs_exits_130(run_cli, monkeypatch):
    monkeypatch.setattr("edgegate.targets.target_names", _raise(KeyboardInterrupt()))
    assert_one_line_error(run_cli("models"), "interrupted", code=130)


def test_a_bug_is_an_internal_error_not_bad_input(run_cli, monkeypatch):
    monkeypatch.setattr("edgegate.pipeline.zoo.model_table", _raise(RuntimeError("boom")))
    assert_one_line_error(run_cli("models"), "internal error", "RuntimeError: boom", code=70)


def test_internal_error_is_one_line_with_its_message(run_cli, monkeypatch):
    failure = InternalError("decomposing edgegate's ops for Core ML failed: x")
    monkeypatch.setattr("edgegate.pipeline.zoo.model_table", _raise(failure))
    assert_one_line_error(run_cli("models"), "internal error", "Core ML failed: x", code=70)


def test_debug_shows_the_traceback(run_cli, monkeypatch):
    monkeypatch.setattr("edgegate.pipeline.zoo.model_table", _raise(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        run_cli("models", "--debug")


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake not installed")
def test_a_failing_toolchain_exits_3_with_the_tools_message(run_cli, monkeypatch, tmp_path):
    """The plugin build's CMake fails: exit 3 naming cmake, with CMake's own error line."""
    from edgegate.exporters.tensorrt.engine import build_plugin

    (tmp_path / "plugin").mkdir()
    (tmp_path / "plugin" / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.18)\nproject(kit LANGUAGES NONE)\n"
        'message(FATAL_ERROR "no TensorRT 9 here")\n'
    )
    monkeypatch.setattr(
        "edgegate.pipeline.zoo.model_table", lambda: build_plugin(tmp_path, tmp_path, "87")
    )
    assert_one_line_error(run_cli("models"), "cmake", "no TensorRT 9 here", code=3)
