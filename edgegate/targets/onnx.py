"""Target ``onnx``: one portable ONNX file per graph, gated scans as custom nodes with fallbacks.

Every gated scan is one node in domain ``edgegate`` (with ``plugin_namespace`` and
``plugin_version`` for TensorRT's parser), and the model carries a Scan-based function of the
same name, so any ONNX runtime runs it. INT8 exports of runtimes edgegate cannot run here
(TensorRT, Core ML) are portable Q/DQ files of this target: they are checked as written,
dequantize then float, which is the meaning ONNX gives them.
"""

from __future__ import annotations

import os
from pathlib import Path

from edgegate.exporters.onnx import auto_dynamic_shapes, custom_ops_used, export_onnx
from edgegate.exporters.onnx.export import graph_inputs
from edgegate.exporters.onnx.weight_only import WeightOnlyForm
from edgegate.runtime import OnnxRuntimeRunner, Runner
from edgegate.targets.base import ExportedFile, ExportPart, Target


class OnnxTarget(Target):
    name = "onnx"
    summary = "portable ONNX: gated scans as custom nodes plus Scan fallback functions"
    suffix = ".onnx"
    device_runtime = "onnxruntime"
    requires = ("onnx", "onnxscript", "onnxruntime")
    install_hint = "pip install onnx onnxscript onnxruntime"
    portable = True
    lowering: str | None = None  # a graph pass of the ONNX exporter, by name
    fuse_qdq = False  # Q/DQ run as written: dequantize, then float
    w4_form = "blockdq"  # standard ONNX: opset-21 int4 DequantizeLinear with block_size

    def weight_only(self, part: ExportPart) -> WeightOnlyForm:
        """The weight-only form this target's file takes (W4 exports)."""
        level = int(part.metadata.get("w4_accuracy_level", "0"))
        return WeightOnlyForm(self.w4_form or "blockdq", level)

    def export(self, part: ExportPart, directory: Path) -> ExportedFile:
        path = export_onnx(
            part.module,
            part.args,
            directory / self.file_name(part.stem),
            lower=self.lowering,
            input_names=part.input_names,
            output_names=part.output_names,
            dynamic_shapes=auto_dynamic_shapes(part.args, part.module, part.dynamic_dims),
            metadata=part.metadata,
            weight_only=self.weight_only(part),
        )
        return ExportedFile(path, graph_inputs(path), custom_ops_used(path))

    def runner(self, path: str | os.PathLike[str], threads: int | None = None) -> Runner:
        return OnnxRuntimeRunner(path, threads=threads, fuse_qdq=self.fuse_qdq)

    def inspectable_onnx(self, model_path: Path) -> Path | None:
        """The file itself is ONNX (also for the onnxruntime target, which inherits this)."""
        return model_path


TARGET = OnnxTarget()
