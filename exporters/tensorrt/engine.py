"""Build a kit's engines in this process, for machines with TensorRT and a GPU (``--build``).

The plugin library is built from the kit's sources with CMake (TensorRT's headers needed, as on
the device; the architecture found as build.sh finds it, never CMake's "native" before 3.24),
loaded through the plugin registry, and each ONNX file becomes ``<part>.engine``
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


def find_nvcc() -> str | None:
    """nvcc: CUDACXX, PATH, CUDA_PATH, then CUDA's default install, which JetPack leaves off
    PATH (CMake 3.22 looks on PATH and in CUDA_PATH only)."""
    cuda_path = os.environ.get("CUDA_PATH", "")
    for candidate in (
        os.environ.get("CUDACXX", ""),
        shutil.which("nvcc") or "",
        os.path.join(cuda_path, "bin", "nvcc") if cuda_path else "",
        "/usr/local/cuda/bin/nvcc",
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def check_toolchain() -> Path:
    """BackendUnavailable naming what is missing to build the plugin library here."""
    missing = [tool for tool in ("cmake", "bash") if shutil.which(tool) is None]
    if find_nvcc() is None:
        missing.append("nvcc")
    headers = tensorrt_headers()
    if headers is None:
        missing.append("TensorRT's headers (set TENSORRT_INCLUDE_DIR)")
    if missing:
        raise BackendUnavailable(f"--build needs {', '.join(missing)} to compile the plugin")
    assert headers is not None
    return headers


def cuda_archs(plugin: Path) -> str:
    """The CUDA architectures of this machine, by the kit's own cuda_arch.sh (build.sh's rules:
    CUDA_ARCHS, nvidia-smi's compute_cap, a Jetson is 87, "native" only from CMake 3.24)."""
    proc = subprocess.run(
        ["bash", "-c", ". ./cuda_arch.sh && cuda_arch"], cwd=plugin, capture_output=True,
        text=True, check=False,
    )  # fmt: skip
    archs = proc.stdout.strip()
    if proc.returncode != 0 or not archs:
        reason = (proc.stderr.strip().splitlines() or ["cuda_arch.sh printed nothing"])[-1]
        raise BackendUnavailable(f"the plugin library cannot be built here: {reason}")
    return archs


def first_error(output: str) -> str:
    """The line that says what went wrong in CMake's or a compiler's output (CMake ends with
    "Configuring incomplete", which says nothing)."""
    lines = [line.strip() for line in output.splitlines()]
    for i, line in enumerate(lines):
        if line.startswith("CMake Error"):  # the message follows, wrapped, up to a blank line
            detail = []
            for text in lines[i + 1 :]:
                if not text and detail:
                    break
                detail += [text] if text else []
            return " ".join([line, *detail])
        if "error:" in line.lower():  # gcc's and nvcc's diagnostics
            return line
    return next((line for line in reversed(lines) if line), "no output")


def build_plugin(kit: Path, headers: Path, archs: str | None = None) -> Path:
    """Compile the kit's plugin library with CMake for ``archs`` (default: this machine's GPU,
    found as build.sh finds it); returns the .so. A failure is the toolchain's: exit 3."""
    plugin = kit / "plugin"
    build = plugin / "build"
    archs = archs or cuda_archs(plugin)
    nvcc = find_nvcc()
    compiler = [f"-DCMAKE_CUDA_COMPILER={nvcc}"] if nvcc else []
    for command in (
        ["cmake", "-S", str(plugin), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
         f"-DTENSORRT_INCLUDE_DIR={headers}", f"-DCMAKE_CUDA_ARCHITECTURES={archs}", *compiler],
        ["cmake", "--build", str(build), "-j"],
    ):  # fmt: skip
        proc = subprocess.run(command, capture_output=True, text=True, check=False)
        if proc.returncode != 0:  # the kit's own sources: never the user's input
            reason = first_error(f"{proc.stderr}\n{proc.stdout}")
            raise ToolchainFailed(
                f"the plugin library did not build ({' '.join(command[:2])}, exit "
                f"{proc.returncode}): {reason}"
            )
    return build / "libedgegate_trt_plugins.so"


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
