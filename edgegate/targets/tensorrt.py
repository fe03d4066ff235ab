"""Target ``tensorrt``: a build kit that builds and checks its engine on the device.

The kit holds ONNX whose gated scans are custom nodes for edgegate's IPluginV3 plugins (and no
local function of the same name, which TensorRT's parser would inline instead), the plugin
sources with CMake, ``build.sh`` (plugin, engine, golden check, timing; TensorRT 10.x or 11.x)
and golden data. Here, without TensorRT, the kit's ONNX is checked in ONNX Runtime with the
Scan fallbacks attached in memory; with TensorRT and a GPU, ``--build`` makes the engines and
the runner runs them.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import onnx
import torch

from edgegate.errors import BadInput
from edgegate.exporters.onnx import custom_ops_used, export_onnx
from edgegate.exporters.onnx.export import auto_dynamic_shapes, graph_inputs
from edgegate.exporters.onnx.weight_only import WeightOnlyForm
from edgegate.exporters.tensorrt import KitPart, for_tensorrt, with_fallbacks, write_kit
from edgegate.exporters.tensorrt.kit import PLUGIN_LIBRARY, shape_ranges
from edgegate.exporters.tensorrt.onnx_model import MAX_HEAD_DIM, PLUGIN_OPS
from edgegate.exporters.tensorrt.trtexec import ShapeRange
from edgegate.manifest import Manifest
from edgegate.ops import observe_scans
from edgegate.runtime import OnnxRuntimeRunner, Runner
from edgegate.targets.base import ExportedFile, ExportPart, Target
from edgegate.validate.parity import Tolerance

GATE_THRESHOLD = 0.5  # validate's: a gate output at or above it is "on"

# What runs a kit on a host without its engine: named in every report that it ran
FALLBACK_RUNTIME = "onnxruntime (Scan fallbacks for the TensorRT plugins)"


class TensorRTTarget(Target):
    name = "tensorrt"
    summary = "TensorRT build kit: ONNX with IPluginV3 scan plugins, plugin sources, build.sh"
    suffix = ".onnx"
    device_runtime = "tensorrt"  # trtexec runs the engine build.sh makes on the device
    raw_device_inputs = True
    requires = ("onnx", "onnxscript", "onnxruntime")  # to write and check the kit here
    install_hint = "pip install onnx onnxscript onnxruntime"
    default_profile = "tensorrt"
    profile_families = ("tensorrt",)
    precisions = ("fp32", "fp16")
    golden_samples = True  # the kit checks its engine on real cases on the device
    # INT4 weight-only as blocked DequantizeLinear -> MatMul; symmetric: TensorRT's INT4
    # dequantize takes no zero point
    w4_form = "blockdq"
    w4_symmetric = True

    def check_part(self, part: ExportPart) -> None:
        """Run the part once and look at every gated scan it calls: the plugin takes the
        three edgegate scans, with key and value head dims of at most 128."""
        for op, shapes in scan_calls(part.module, part.args):
            if op not in PLUGIN_OPS:
                raise BadInput(f"{op} has no TensorRT plugin (supported: {', '.join(PLUGIN_OPS)})")
            if op != "GatedLinearScan":
                key, value = shapes[0][-1], shapes[2][-1]
                if max(key, value) > MAX_HEAD_DIM:
                    raise BadInput(
                        f"{part.stem}: {op} has key/value head dims [{key}, {value}]: the "
                        f"TensorRT plugin takes at most {MAX_HEAD_DIM}"
                    )

    def export(self, part: ExportPart, directory: Path) -> ExportedFile:
        path = directory / self.file_name(part.stem)
        export_onnx(
            part.module,
            part.args,
            path,
            input_names=part.input_names,
            output_names=part.output_names,
            dynamic_shapes=auto_dynamic_shapes(part.args, part.module, part.dynamic_dims),
            metadata=part.metadata,
            weight_only=WeightOnlyForm(self.w4_form),
        )
        shapes = [list(a.shape) for a in part.args]
        model = for_tensorrt(onnx.load(path), shapes, fp16=part.precision == "fp16")
        path.write_bytes(model.SerializeToString())  # inside the export's staging folder
        return ExportedFile(path, graph_inputs(path), custom_ops_used(path))

    def package(
        self,
        directory: Path,
        model: str,
        precision: str,
        parts: list[ExportPart],
        files: list[ExportedFile],
    ) -> dict[str, Any]:
        kit_parts = [
            KitPart(
                part.stem,
                written.path.name,
                part.module,
                part.args,
                part.input_names,
                part.output_names,
                shape_ranges(
                    part.input_names,
                    part.args,
                    part.dynamic_dims,
                    self.max_batch,
                    {(r.index, r.axis): (r.low, r.high) for r in part.ranges},
                ),
                part.classifier_outputs,
                part.gate_outputs,
                part.samples,
            )
            for part, written in zip(parts, files, strict=True)
        ]
        plugins = any(written.custom_ops for written in files)
        return write_kit(directory, model, precision, kit_parts, kit_tolerance(precision), plugins)

    def runner(self, path: str | os.PathLike[str], threads: int | None = None) -> Runner:
        """The engine beside the ONNX file when TensorRT can run it; otherwise the ONNX itself in
        ONNX Runtime, with the Scan fallbacks attached in memory and Q/DQ run as written, named
        as such (``FALLBACK_RUNTIME``) so that no report calls it TensorRT."""
        path = Path(path)
        engine = path.with_suffix(".engine")
        plugin = path.parent / PLUGIN_LIBRARY
        if fallback_reason(engine) is None:
            from edgegate.runtime import TensorRTRunner

            return TensorRTRunner(engine, plugin if plugin.is_file() else None)
        try:
            model = with_fallbacks(onnx.load(os.fspath(path)))
        except Exception as exc:  # a corrupt file: the same one line as every runner gives
            reason = type(exc).__name__
            raise BadInput(f"'{path}' is not a loadable ONNX model ({reason})") from None
        runner = OnnxRuntimeRunner(
            path, threads=threads, fuse_qdq=False, model_bytes=model.SerializeToString()
        )
        runner.name = FALLBACK_RUNTIME
        return runner

    def host_warnings(
        self, manifest: Manifest | None, model_file: str, directory: Path | None = None
    ) -> list[str]:
        """One line whenever the kit's ONNX runs here instead of its engine."""
        engine = (directory or Path()) / Path(model_file).with_suffix(".engine")
        reason = fallback_reason(engine)
        if reason is None:
            return []
        return [
            f"the TensorRT engine did not run ({reason}): {model_file} ran in "
            f"{FALLBACK_RUNTIME}, a check of the kit's graph, not of TensorRT's kernels or speed"
        ]

    def device_files(self, manifest: Manifest, model_file: str) -> list[str]:
        """The whole kit, which builds its engine on the device; not the torch weights."""
        return sorted(name for name in manifest.files if not name.endswith((".pt", ".pt2")))

    def device_record(self, manifest: Manifest, model_file: str) -> dict[str, Any]:
        return {
            "tensorrt": {
                "engine": str(Path(model_file).with_suffix(".engine")),
                "plugin": PLUGIN_LIBRARY if manifest.custom_ops else None,
                "build": "build.sh",
            }
        }

    def inspectable_onnx(self, model_path: Path) -> Path | None:
        """The kit's ONNX (its scans get their Scan fallbacks in memory), also when an engine
        was built beside it: the engine's layers are TensorRT's, not the module's."""
        return Path(model_path)

    def check_build(self) -> None:
        from edgegate.exporters.tensorrt.engine import check_toolchain
        from edgegate.runtime.tensorrt_runner import import_tensorrt, require_gpu

        import_tensorrt()
        require_gpu()
        check_toolchain()

    def build(self, directory: Path, manifest: Manifest) -> list[str]:
        from edgegate.exporters.tensorrt.engine import build_engine, build_plugin, check_toolchain

        self.check_build()
        headers = check_toolchain()
        library = build_plugin(directory, headers) if manifest.custom_ops else None
        precision = manifest.precision
        written = []
        for stem, ranges in manifest.extra["shapes"].items():
            onnx_file = directory / self.file_name(stem)
            profile = [ShapeRange(name, tuple(r["min"]), tuple(r["opt"]), tuple(r["max"]))
                       for name, r in ranges.items()]  # fmt: skip
            engine = build_engine(
                onnx_file, onnx_file.with_suffix(".engine"), library, profile, precision
            )
            written.append(engine.name)
        return written


def kit_tolerance(precision: str) -> dict[str, Any]:
    """What the kit's compare.py judges an engine by: validate's tolerance for the precision,
    with validate's rules (decisions judge fp16 and INT8 outputs). An fp32 engine may run
    TF32 matrix units by default, fp16's 10 mantissa bits: it is judged as fp16 is."""
    tolerance = Tolerance.for_precision("fp16" if precision == "fp32" else precision)
    return {**asdict(tolerance), "precision": precision, "gate_threshold": GATE_THRESHOLD}


def scan_calls(module, args) -> list[tuple[str, list[tuple[int, ...]]]]:
    """The gated scans one forward pass of ``module`` calls, with their input shapes."""
    calls: list[tuple[str, list[tuple[int, ...]]]] = []
    with torch.no_grad(), observe_scans(lambda op, shapes: calls.append((op, shapes))):
        module(*args)
    return calls


def fallback_reason(engine: Path) -> str | None:
    """Why ``engine`` cannot run here (so the kit's ONNX runs instead), or None when it can."""
    from edgegate.runtime.tensorrt_runner import import_tensorrt, require_gpu

    try:
        import_tensorrt()
    except Exception:
        return "TensorRT is not installed here"
    try:
        require_gpu()
    except Exception:
        return "no CUDA GPU here"
    if not engine.is_file():
        return f"no {engine.name} beside the kit: export with --build on the device"
    return None


TARGET = TensorRTTarget()
