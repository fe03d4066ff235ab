"""Target ``coreml``: an ML Program package (.mlpackage) for iPhone, iPad and Mac.

torch.export, edgegate's loop-free scan forms, then coremltools. Computes in fp16 by default,
with the scan regions (cumsum and exp of log gates included) and MoE routers kept in fp32; LMs
get a flexible sequence length, image models flexible sizes. ``--int8`` stores the weights that
edgegate's quantizer put on a per-channel int8 grid as int8 constexprs (iOS17+); scan
projections stay float. Core ML predicts on macOS only: elsewhere the runner emulates the
program in numpy.
"""

from __future__ import annotations

import os
from pathlib import Path

from edgegate.errors import BadInput
from edgegate.manifest import Manifest
from edgegate.ops import observe_scans
from edgegate.ops._parallel import MAX_PARALLEL_T
from edgegate.runtime import CoreMLRunner, Runner
from edgegate.targets.base import ExportedFile, ExportPart, Target

INPUT_DOCS = {
    "images": "images, float32, normalised as in training (sizes: the manifest's ranges)",
    "tokens": "token ids (bytes 0-255), int32 (lengths: the manifest's ranges)",
    "features": "stage-1 features of a gated-compression model",
}


class CoreMLTarget(Target):
    name = "coreml"
    # W4: iOS18 per-block int4 constexprs (constexpr_blockwise_shift_scale) holding the W4
    # codes and scales (edgegate.exporters.coreml.w4), computed in fp16 as Core ML does
    w4_form = "int4-blockwise"
    w4_symmetric = True
    summary = "Core ML ML Program (.mlpackage): fp16 with fp32 scans; predict on macOS only"
    suffix = ".mlpackage"
    requires = ("coremltools",)
    install_hint = "pip install 'edgegate-nn[coreml]'"
    default_profile = "coreml"
    profile_families = ("coreml",)
    precisions = ("fp16", "fp32")  # the first is the default
    converts_precision = True  # gets the fp32 module and converts to fp16 itself
    device_runtime = "coreml"
    # the package stores the int8 weights per output channel (quantize_grid_weights): a
    # per-tensor grid would not be found there and those weights would ship in float
    weight_granularities = ("channel",)
    # the loop-free scan forms are built for the export's length; images may grow
    sequences_bounded_by_export = True

    def __init__(self) -> None:
        self._programs: dict[int, object] = {}  # check_part's exported programs, for export

    def check_part(self, part: ExportPart) -> None:
        """Lengths the loop-free scan forms take; every scan the model calls has one."""
        if part.metadata.get("task") == "lm":
            length = int(part.args[0].shape[1])
            if length > MAX_PARALLEL_T:
                raise BadInput(
                    f"{part.stem}: sequence length {length} is beyond the range of the "
                    f"loop-free scan forms Core ML gets (at most {MAX_PARALLEL_T}); export a "
                    "shorter --seq-len and stream with the state"
                )
        calls: list[str] = []
        import torch

        with torch.no_grad(), observe_scans(lambda op, shapes: calls.append(op)):
            part.module(*part.args)
        known = {"GatedLinearScan", "GatedLinearAttention", "GatedDeltaRule"}
        unknown = sorted(set(calls) - known)
        if unknown:
            raise BadInput(f"{part.stem}: no Core ML decomposition for {', '.join(unknown)}")
        # torch.export and the op check take seconds, conversion a minute: fail before it
        if not _w4(part):  # a W4 part is exported from its torchao form (export_coreml_w4)
            self._programs[id(part)] = self._program(part)

    def w4_settings(self, profile: str) -> dict[str, str]:
        return {"w4_precision": "fp16"}

    def w4_module(self, module):
        return module  # export_coreml_w4 converts the W4 layers itself

    def _program(self, part: ExportPart):
        from edgegate.exporters.coreml import prepare_program
        from edgegate.quant.qdq import dequantized_weights

        module = dequantized_weights(part.module) if _int8(part) else part.module
        bounds = {(r.index, r.axis): (r.low, r.high) for r in part.ranges}
        return prepare_program(
            module,
            part.args,
            part.dynamic_dims,
            sequence=part.metadata.get("task") == "lm",
            bounds=bounds,
        )

    def export(self, part: ExportPart, directory: Path) -> ExportedFile:
        from edgegate.exporters.coreml import export_coreml

        if _w4(part):
            return self._export_w4(part, directory)
        program = self._programs.pop(id(part), None) or self._program(part)
        int8 = _int8(part)
        precision = "fp16" if int8 else part.precision
        exported = export_coreml(
            program,
            directory / self.file_name(part.stem),
            input_names=part.input_names,
            output_names=part.output_names,
            precision=precision,
            int8_weights=int8,
            metadata={**part.metadata, "compute_precision": precision},
            input_docs={n: INPUT_DOCS[n] for n in part.input_names if n in INPUT_DOCS},
        )
        return ExportedFile(exported.path, exported.inputs, [])

    def _export_w4(self, part: ExportPart, directory: Path) -> ExportedFile:
        from edgegate.exporters.coreml.w4 import export_coreml_w4

        w4 = export_coreml_w4(
            part.module,
            part.args,
            directory / self.file_name(part.stem),
            input_names=part.input_names,
            output_names=part.output_names,
            dynamic_dims=part.dynamic_dims,
            sequence=part.metadata.get("task") == "lm",
            precision="fp16",
            bounds={(r.index, r.axis): (r.low, r.high) for r in part.ranges},
            metadata={**part.metadata, "compute_precision": "fp16"},
            input_docs={n: INPUT_DOCS[n] for n in part.input_names if n in INPUT_DOCS},
        )
        return ExportedFile(w4.export.path, w4.export.inputs, [])

    def runner(self, path: str | os.PathLike[str], threads: int | None = None) -> Runner:
        return CoreMLRunner(path, threads=threads)

    def host_warnings(
        self, manifest: Manifest | None, model_file: str, directory: Path | None = None
    ) -> list[str]:
        from edgegate.runtime.coreml_runner import can_predict

        if can_predict():
            return []
        return [
            f"Core ML predicts on macOS only: {model_file} runs in edgegate's numpy emulation "
            "of its ML Program here, which checks the conversion; its latency is numpy's, not "
            "a device's"
        ]


def _w4(part: ExportPart) -> bool:
    """A W4 part (``quantize --scheme w4``): float model with W4 layers."""
    return part.metadata.get("scheme") == "w4"


def _int8(part: ExportPart) -> bool:
    """An INT8 part from the quantizer: Q/DQ twins whose weights Core ML stores as int8."""
    return part.metadata.get("precision") == "int8"


TARGET = CoreMLTarget()
