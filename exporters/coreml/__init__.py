"""Core ML export: torch.export -> edgegate's loop-free scans -> ML Program (.mlpackage).

`program` makes the exported program (shape ranges, decomposed scans, the scan regions and
MoE routers), `convert` turns it into a package (fp16 with those regions fp32, int8 weights,
metadata), `inspect` reads a package back for the checks Linux can make (ops, dtypes, shape
ranges, weights).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from edgegate.exporters.coreml.convert import (
    DEPLOYMENT_TARGET,
    convert,
    describe,
    quantize_grid_weights,
    rename,
    save,
)
from edgegate.exporters.coreml.inspect import package_inputs
from edgegate.exporters.coreml.program import (
    dim_ranges,
    export_program,
    routing_region,
    scan_region,
)
from edgegate.manifest import InputSpec

__all__ = ["CoreMLExport", "export_coreml", "package_inputs", "prepare_program"]


@dataclass(frozen=True)
class CoreMLExport:
    path: Path
    inputs: list[InputSpec]
    int8_weights: list[str]  # names of the weights stored as int8
    fp32_ops: int  # ops kept in fp32 (the scan regions and MoE routers) under fp16


def prepare_program(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    dynamic_dims: Sequence[Sequence[int]],
    *,
    sequence: bool,
    bounds: dict[tuple[int, int], tuple[int, int]] | None = None,
) -> torch.export.ExportedProgram:
    """The exported, decomposed, checked program (BadInput for what Core ML cannot take):
    seconds, where the conversion that follows takes up to a minute. ``bounds`` are the
    declared ranges of dims, (input index, dim) -> (low, high)."""
    ranges = dim_ranges(args, dynamic_dims, sequence=sequence, bounds=bounds)
    max_len = max((r.high for r in ranges if sequence and r.dim == 1), default=1)
    with warnings.catch_warnings():  # torch's own deprecations while copying the program
        warnings.simplefilter("ignore", FutureWarning)
        return export_program(module, args, ranges, max_len=max_len)


def export_coreml(
    program: torch.export.ExportedProgram,
    path: Path,
    *,
    input_names: list[str],
    output_names: list[str],
    precision: str = "fp16",
    int8_weights: bool = False,
    metadata: dict[str, str] | None = None,
    input_docs: dict[str, str] | None = None,
    deployment_target: str = DEPLOYMENT_TARGET,
) -> CoreMLExport:
    """Write ``program`` (from `prepare_program`) as ``path`` (an .mlpackage folder), for
    ``deployment_target`` (coremltools' name: iOS17, iOS18 ...) and later."""
    keep = scan_region(program) | routing_region(program)
    model = convert(
        program, precision=precision, keep_fp32=keep, deployment_target=deployment_target
    )
    quantized: list[str] = []
    if int8_weights:  # on the converted program, before renaming rebuilds the model from spec
        model, quantized = quantize_grid_weights(model)
    model = rename(model, input_names, output_names)
    describe(model, metadata or {}, input_docs or {})
    save(model, path)
    return CoreMLExport(
        path, package_inputs(path), quantized, len(keep) if precision == "fp16" else 0
    )
