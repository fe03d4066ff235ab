"""The plugin's CMakeLists.txt with the system's CMake and with JetPack 6's CMake 3.22.

Arguments are refused before project(), so a configure without an architecture can no longer
fall back to nvcc's default (CMake 3.22 chose sm_75, which Orin cannot load). The builds
against TensorRT's public headers (10.x and 11.x) are slow: one kernel compile each.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

CSRC = Path(__file__).resolve().parents[2] / "csrc" / "tensorrt"
PROJECT_STARTED = "compiler identification"  # what project() prints first


def configure(cmake: str, build: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CUDAARCHS"}
    return subprocess.run([cmake, "-S", str(CSRC), "-B", str(build), *args], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


@pytest.fixture
def header_stub(tmp_path) -> Path:
    """A folder that passes the configure-time header check (nothing is compiled from it)."""
    folder = tmp_path / "headers"
    folder.mkdir()
    (folder / "NvInferRuntime.h").write_text("#error configure-only stand-in\n")
    return folder


def test_configure_without_an_arch_fails_before_project(cmake, header_stub, tmp_path):
    done = configure(cmake, tmp_path / "build", f"-DTENSORRT_INCLUDE_DIR={header_stub}")
    out = done.stdout + done.stderr
    assert done.returncode != 0 and "set CMAKE_CUDA_ARCHITECTURES" in out, out
    assert PROJECT_STARTED not in out, out


def test_configure_without_headers_fails_before_project(cmake, tmp_path):
    done = configure(cmake, tmp_path / "build", "-DCMAKE_CUDA_ARCHITECTURES=87",
                     f"-DTENSORRT_INCLUDE_DIR={tmp_path}")  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode != 0 and "holds no NvInferRuntime.h" in out, out
    assert PROJECT_STARTED not in out, out


def test_native_is_refused_by_cmake_322(old_cmake, header_stub, tmp_path):
    done = configure(old_cmake, tmp_path / "build", "-DCMAKE_CUDA_ARCHITECTURES=native",
                     f"-DTENSORRT_INCLUDE_DIR={header_stub}")  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode != 0 and "native needs CMake 3.24 (this is 3.22" in out, out
    assert PROJECT_STARTED not in out, out


def test_configure_with_an_arch_keeps_it(cmake, header_stub, tmp_path):
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc is not installed: CMake cannot enable CUDA")
    build = tmp_path / "build"
    done = configure(cmake, build, "-DCMAKE_CUDA_ARCHITECTURES=87",
                     f"-DTENSORRT_INCLUDE_DIR={header_stub}")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    cache = (build / "CMakeCache.txt").read_text()
    assert "CMAKE_CUDA_ARCHITECTURES:UNINITIALIZED=87\n" in cache


@pytest.mark.slow
def test_plugin_library_builds_and_loads(cmake, trt_headers, cuda, gpp, tmp_path):
    """Both CMakes x both TensorRT majors: the library builds for sm_87, exports the loader's
    entry points, and its creators pass the lifecycle program (kernels linked, not run)."""
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc is not installed: the CUDA kernels cannot be compiled here")
    build = tmp_path / "build"
    done = configure(cmake, build, "-DCMAKE_CUDA_ARCHITECTURES=87",
                     f"-DTENSORRT_INCLUDE_DIR={trt_headers}")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    made = subprocess.run([cmake, "--build", str(build), "-j", "2"], capture_output=True,
                          text=True, timeout=900)  # fmt: skip
    assert made.returncode == 0, made.stdout + made.stderr
    library = build / "libedgegate_trt_plugins.so"
    symbols = subprocess.run(["nm", "-D", "--defined-only", str(library)], capture_output=True,
                             text=True, check=True).stdout  # fmt: skip
    assert " getCreators" in symbols and " setLoggerFinder" in symbols
    cuobjdump = shutil.which("cuobjdump")
    if cuobjdump is not None:
        listing = subprocess.run([cuobjdump, "--list-elf", str(library)], capture_output=True,
                                 text=True, check=True).stdout  # fmt: skip
        assert "sm_87" in listing and "sm_75" not in listing, listing
    driver = tmp_path / "plugin_lifecycle"
    subprocess.run(
        [gpp, "-std=c++17", "-O1", "-isystem", str(trt_headers), "-isystem",
         str(cuda / "include"), str(CSRC / "tests" / "plugin_lifecycle.cpp"), "-ldl", "-o",
         str(driver)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    env = {**os.environ, "LD_LIBRARY_PATH": str(cuda / "lib64")}
    ran = subprocess.run([str(driver), str(library)], capture_output=True, text=True, env=env,
                         timeout=60)  # fmt: skip
    assert ran.returncode == 0 and "PASS" in ran.stdout, ran.stdout + ran.stderr
