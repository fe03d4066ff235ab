"""The TensorRT plugin's CUDA and C++ sources compile here, as far as this machine allows.

nvcc is installed on development and CI machines (no GPU): the kernels are compiled to machine
code for Orin (sm_87) and Hopper (sm_90). The plugin library itself is built against TensorRT's
headers with both CMakes in test_tensorrt_cmake.py.
"""

from __future__ import annotations

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
