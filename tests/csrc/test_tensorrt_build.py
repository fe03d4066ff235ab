"""The TensorRT plugin's CUDA and C++ sources compile here, as far as this machine allows.

nvcc is installed on development and CI machines (no GPU): the kernels are compiled to machine
code for Orin (sm_87) and Hopper (sm_90). The plugin library itself needs TensorRT's headers,
which no package registry ships; with TENSORRT_INCLUDE_DIR pointing at them (for example the
include/ folder of the public NVIDIA/TensorRT repository), CMake builds it as build.sh does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

CSRC = Path(__file__).resolve().parents[2] / "csrc" / "tensorrt"
ARCHS = ("87", "90")


@pytest.fixture(scope="module")
def nvcc() -> str:
    found = shutil.which("nvcc")
    if found is None:
        pytest.skip("nvcc is not installed: the CUDA kernels cannot be compiled here")
    return found


def test_kernels_compile_to_machine_code_for_orin_and_hopper(nvcc, tmp_path):
    obj = tmp_path / "scan_kernels.o"
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in ARCHS]
    subprocess.run(
        [nvcc, "-std=c++17", "-O3", "--threads", "2", *gencode, f"-I{CSRC / 'include'}",
         "-Xcompiler", "-fPIC", "-c", str(CSRC / "src" / "scan_kernels.cu"), "-o", str(obj)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    cuobjdump = shutil.which("cuobjdump")
    if cuobjdump is not None:
        listing = subprocess.run([cuobjdump, "--list-elf", str(obj)], capture_output=True,
                                 text=True, check=True).stdout  # fmt: skip
        for arch in ARCHS:
            assert f"sm_{arch}" in listing, listing


def test_plugin_library_builds_with_cmake_against_tensorrt_headers(nvcc, tmp_path):
    headers = os.environ.get("TENSORRT_INCLUDE_DIR", "")
    if not (Path(headers) / "NvInferRuntime.h").is_file():
        pytest.skip("TensorRT headers not found: set TENSORRT_INCLUDE_DIR to build the plugin")
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed")
    build = tmp_path / "build"
    subprocess.run(
        ["cmake", "-S", str(CSRC), "-B", str(build), f"-DTENSORRT_INCLUDE_DIR={headers}",
         f"-DCMAKE_CUDA_ARCHITECTURES={';'.join(ARCHS)}"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    subprocess.run(["cmake", "--build", str(build), "-j", "2"], check=True, capture_output=True)
    library = build / "libedgegate_trt_plugins.so"
    symbols = subprocess.run(["nm", "-D", "--defined-only", str(library)], capture_output=True,
                             text=True, check=True).stdout  # fmt: skip
    assert " getCreators" in symbols and " setLoggerFinder" in symbols
