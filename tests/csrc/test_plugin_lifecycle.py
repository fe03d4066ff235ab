"""The plugin objects' lifecycle, checked on the host against TensorRT's real headers.

csrc/tensorrt/tests/plugin_lifecycle.cpp opens a plugin library as TensorRT's loadLibrary does
and drives create -> clone -> serialise fields -> recreate, the shape checks and the default
scale. Here the library is plugins.cpp linked with recording stand-ins for the CUDA launchers
(g++ only, a few seconds, no GPU), so enqueue's arguments can be read back; the slow CMake tests
(test_tensorrt_cmake.py) run the same program on the library CMake builds with the kernels.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

CSRC = Path(__file__).resolve().parents[2] / "csrc" / "tensorrt"
FLAGS = ["-std=c++17", "-O1", "-Wall", "-Wextra", "-Werror", "-Wno-deprecated-declarations"]


def compile_driver(gpp: str, headers: Path, cuda: Path, out: Path) -> Path:
    """The lifecycle program (TensorRT's and CUDA's headers only, no library to link)."""
    driver = out / "plugin_lifecycle"
    subprocess.run(
        [gpp, *FLAGS, "-isystem", str(headers), "-isystem", str(cuda / "include"),
         str(CSRC / "tests" / "plugin_lifecycle.cpp"), "-ldl", "-o", str(driver)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return driver


def run_driver(driver: Path, library: Path) -> str:
    proc = subprocess.run([str(driver), str(library)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "PASS" in proc.stdout, proc.stdout + proc.stderr
    return proc.stdout


def test_plugin_lifecycle_with_recorded_launches(trt_headers, cuda, gpp, tmp_path):
    library = tmp_path / "libedgegate_trt_host.so"
    subprocess.run(
        [gpp, *FLAGS, "-shared", "-fPIC", "-isystem", str(trt_headers), "-isystem",
         str(cuda / "include"), f"-I{CSRC / 'include'}", f"-I{CSRC / 'src'}",
         str(CSRC / "src" / "plugins.cpp"), str(CSRC / "tests" / "recording_launchers.cpp"),
         f"-L{cuda / 'lib64'}", "-lcudart", f"-Wl,-rpath,{cuda / 'lib64'}", "-o", str(library)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    out = run_driver(compile_driver(gpp, trt_headers, cuda, tmp_path), library)
    assert "launches recorded" in out, out
