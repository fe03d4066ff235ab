"""Toolchains for the TensorRT plugin's tests: TensorRT's public headers, CMake 3.22, CUDA.

No package registry ships TensorRT's headers, so the tests read their folders from the
environment: TENSORRT_INCLUDE_DIR and TENSORRT_INCLUDE_DIR_ALT (two majors, e.g. the
include/ folders of NVIDIA/TensorRT's release/10.3 and v11.1 tags). CMake 3.22 (JetPack 6's
Ubuntu 22.04) comes from EDGEGATE_CMAKE_322, else /tmp/cmake322/bin/cmake, where
scripts/ci_cmake322.sh installs it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

CSRC = Path(__file__).resolve().parents[2] / "csrc" / "tensorrt"
HEADER_VARS = ("TENSORRT_INCLUDE_DIR", "TENSORRT_INCLUDE_DIR_ALT")
CMAKE_322_DEFAULT = "/tmp/cmake322/bin/cmake"


def cmake_version(cmake: str) -> str:
    out = subprocess.run([cmake, "--version"], capture_output=True, text=True, check=True).stdout
    found = re.search(r"cmake version (\d+\.\d+\.\d+)", out)
    assert found, out
    return found.group(1)


def system_cmake() -> str:
    found = shutil.which("cmake")
    if found is None:
        pytest.skip("cmake is not installed")
    return found


def cmake_322() -> str:
    """CMake 3.22 (EDGEGATE_CMAKE_322 or the CI script's location); a wrong version fails."""
    path = os.environ.get("EDGEGATE_CMAKE_322") or CMAKE_322_DEFAULT
    if not os.access(path, os.X_OK):
        pytest.skip(f"CMake 3.22 not found at {path}: run scripts/ci_cmake322.sh "
                    "or set EDGEGATE_CMAKE_322")  # fmt: skip
    version = cmake_version(path)
    assert version.startswith("3.22."), f"{path} is CMake {version}, not 3.22"
    return path


@pytest.fixture(params=["system", "3.22"])
def cmake(request) -> str:
    """Each CMake the plugin must configure with: the system's and JetPack 6's 3.22."""
    return system_cmake() if request.param == "system" else cmake_322()


def tensorrt_headers(var: str) -> Path:
    folder = os.environ.get(var, "")
    if not folder or not (Path(folder) / "NvInferRuntime.h").is_file():
        pytest.skip(f"TensorRT headers not found (no package registry ships them): set {var} "
                    "to a folder holding NvInferRuntime.h")  # fmt: skip
    return Path(folder)


def tensorrt_version(headers: Path) -> str:
    text = (headers / "NvInferVersion.h").read_text()
    found = dict(re.findall(r"#define (\w+) (\d+)", text))
    major = found.get("NV_TENSORRT_MAJOR", found.get("TRT_MAJOR_ENTERPRISE", "?"))
    minor = found.get("NV_TENSORRT_MINOR", found.get("TRT_MINOR_ENTERPRISE", "?"))
    return f"{major}.{minor}"


@pytest.fixture(params=HEADER_VARS)
def trt_headers(request) -> Path:
    return tensorrt_headers(request.param)


def cuda_home() -> Path:
    """The CUDA toolkit whose runtime header and library the host-side builds use."""
    candidates = [os.environ.get("CUDA_HOME", ""), os.environ.get("CUDA_PATH", "")]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(str(Path(nvcc).resolve().parents[1]))
    candidates.append("/usr/local/cuda")
    for folder in filter(None, candidates):
        root = Path(folder)
        if (root / "include" / "cuda_runtime_api.h").is_file() and any(
            (root / "lib64").glob("libcudart.so*")
        ):
            return root
    pytest.skip("CUDA toolkit not found (cuda_runtime_api.h and libcudart): set CUDA_HOME")
    raise AssertionError  # unreachable: skip raises


def gxx() -> str:
    found = shutil.which("g++")
    if found is None:
        pytest.skip("g++ is not installed: the host-side plugin test cannot be compiled")
    return found


@pytest.fixture
def cuda() -> Path:
    return cuda_home()


@pytest.fixture
def gpp() -> str:
    return gxx()


@pytest.fixture
def old_cmake() -> str:
    """CMake 3.22 alone, for what only an older CMake shows."""
    return cmake_322()
