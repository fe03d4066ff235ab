"""--build's plugin step: the architecture found as build.sh finds it, and a failed build is the
toolchain's (exit 3) with CMake's own message, not "Configuring incomplete"."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from edgegate.errors import EXIT_BACKEND_UNAVAILABLE, BackendUnavailable, ToolchainFailed
from edgegate.exporters.tensorrt.engine import build_plugin, cuda_archs, find_nvcc, first_error
from edgegate.exporters.tensorrt.kit import PLUGIN_DIR, PLUGIN_SOURCES

CSRC = Path(__file__).resolve().parents[3] / "csrc" / "tensorrt"


@pytest.fixture
def kit(tmp_path) -> Path:
    """A kit's plugin/ folder, as write_kit copies it."""
    for relative in PLUGIN_SOURCES:
        target = tmp_path / PLUGIN_DIR / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(CSRC / relative, target)
    return tmp_path


def fake_tool(folder: Path, name: str, body: str) -> None:
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(f"#!/bin/sh\n{body}\n")
    (folder / name).chmod(0o755)


def test_cuda_archs_reads_the_gpu_through_the_kits_script(kit, tmp_path, monkeypatch):
    fake_tool(tmp_path / "bin", "nvidia-smi", "echo 9.0")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_ARCHS", raising=False)
    assert cuda_archs(kit / PLUGIN_DIR) == "90"


def test_cuda_archs_that_are_no_number_are_exit_3(kit, monkeypatch):
    monkeypatch.setenv("CUDA_ARCHS", "8.7")
    with pytest.raises(BackendUnavailable, match=r"CUDA_ARCHS='8\.7' is not") as info:
        cuda_archs(kit / PLUGIN_DIR)
    assert info.value.exit_code == EXIT_BACKEND_UNAVAILABLE


def test_a_failed_plugin_build_names_cmakes_error(kit, tmp_path):
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed")
    no_headers = tmp_path / "empty"
    no_headers.mkdir()
    with pytest.raises(ToolchainFailed, match="holds no NvInferRuntime.h") as info:
        build_plugin(kit, no_headers, archs="87")
    assert "Configuring incomplete" not in str(info.value)


def test_nvcc_outside_path_is_found_through_cudacxx(tmp_path, monkeypatch):
    fake_tool(tmp_path / "cuda", "nvcc", "exit 0")
    monkeypatch.setenv("CUDACXX", str(tmp_path / "cuda" / "nvcc"))
    assert find_nvcc() == str(tmp_path / "cuda" / "nvcc")


def test_first_error_prefers_the_diagnostic():
    cmake = (
        "-- ok\nCMake Error at CMakeLists.txt:24 (message):\n  set CMAKE_CUDA_ARCHITECTURES: 87\n"
        "  (Jetson Orin)\n\n\n-- Configuring incomplete, errors occurred!\n"
    )
    assert first_error(cmake) == (
        "CMake Error at CMakeLists.txt:24 (message): set CMAKE_CUDA_ARCHITECTURES: 87 (Jetson Orin)"
    )
    nvcc = "[ 33%] Building\nsrc/plugins.cpp:12:1: error: 'x' was not declared\nmake: *** Error 1\n"
    assert first_error(nvcc) == "src/plugins.cpp:12:1: error: 'x' was not declared"
    assert first_error("") == "no output"
