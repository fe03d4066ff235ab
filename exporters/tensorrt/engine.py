"""Build a kit's engines in this process, for machines with TensorRT and a GPU (``--build``).

The plugin library is built from the kit's sources with CMake (TensorRT's headers needed, as on
the device), loaded through the plugin registry, and each ONNX file becomes ``<part>.engine``
with the kit's shape ranges and precision (builder flags on 10.x; 11.x is strongly typed).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from edgegate.atomic import atomic_write
from edgegate.errors import BackendUnavailable, ToolchainFailed
from edgegate.exporters.tensorrt.plugin_library import load_plugins
from edgegate.exporters.tensorrt.trtexec import ShapeRange

HEADER_DIRS = ("/usr/include/x86_64-linux-gnu", "/usr/include/aarch64-linux-gnu", "/usr/include",
               "/usr/local/tensorrt/include", "/opt/tensorrt/include")  # fmt: skip


def tensorrt_headers() -> Path | None:
    """The folder holding NvInferVersion.h: TENSORRT_INCLUDE_DIR, then the usual places."""
    candidates = [os.environ.get("TENSORRT_INCLUDE_DIR", ""), *HEADER_DIRS]
    for folder in candidates:
        if folder and (Path(folder) / "NvInferVersion.h").is_file():
            return Path(folder)
    return None


def check_toolchain() -> Path:
    """BackendUnavailable naming what is missing to build the plugin library here."""
    missing = [tool for tool in ("cmake", "nvcc") if shutil.which(tool) is None]
    headers = tensorrt_headers()
    if headers is None:
        missing.append("TensorRT's headers (set TENSORRT_INCLUDE_DIR)")
    if missing:
        raise BackendUnavailable(f"--build needs {', '.join(missing)} to compile the plugin")
    assert headers is not None
    return headers


def build_plugin(kit: Path, headers: Path, archs: str = "native") -> Path:
    """Compile the kit's plugin library with CMake; returns the .so."""
    build = kit / "plugin" / "build"
    for command in (
        ["cmake", "-S", str(kit / "plugin"), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
         f"-DTENSORRT_INCLUDE_DIR={headers}", f"-DCMAKE_CUDA_ARCHITECTURES={archs}"],
        ["cmake", "--build", str(build), "-j"],
    ):  # fmt: skip
        proc = subprocess.run(command, capture_output=True, text=True, check=False)
        if proc.returncode != 0:  # the kit's own sources: never the user's input
            raise ToolchainFailed(
                f"the plugin library did not build ({' '.join(command[:2])}, exit "
                f"{proc.returncode}): {tool_message(proc.stderr, proc.stdout)}"
            )
    return build / "libedgegate_trt_plugins.so"


def tool_message(*outputs: str) -> str:
    """The line of a tool's output that says what went wrong: the first that mentions an
    error (with the next line when it only says where, as CMake's "CMake Error at ...:"
    does), else the last line."""
    lines = [line.strip() for text in outputs for line in text.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if "error" in line.lower():
            follows = line.endswith(":") and i + 1 < len(lines)
            return f"{line} {lines[i + 1]}" if follows else line
    return lines[-1] if lines else "no output"


def build_engine(
    onnx_file: Path, engine_file: Path, plugin_library: Path | None, ranges: list[ShapeRange],
    precision: str,
) -> Path:  # fmt: skip
    """Parse ``onnx_file`` with the plugins registered (a graph without edgegate's custom ops
    has no library) and serialise its engine."""
    import tensorrt as trt  # the caller has checked that it imports

    logger = trt.Logger(trt.Logger.WARNING)
    if plugin_library is not None:
        load_plugins(trt, plugin_library)  # once per process: the runner may load it next
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(os.fspath(onnx_file)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ToolchainFailed(f"TensorRT's ONNX parser refused {onnx_file.name}: {errors[:1]}")
    config = builder.create_builder_config()
    if ranges:
        profile = builder.create_optimization_profile()
        for r in ranges:
            profile.set_shape(r.name, r.min, r.opt, r.max)
        config.add_optimization_profile(profile)
    major = int(trt.__version__.split(".")[0])
    if major < 11 and precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    if major < 11 and precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ToolchainFailed(
            f"TensorRT's builder made no engine from {onnx_file.name} (its log says why)"
        )
    with atomic_write(engine_file) as fh:
        fh.write(bytes(serialized))
    return engine_file
