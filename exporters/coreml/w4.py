"""export_coreml_w4: a W4-prepared model -> an iOS18 ML Program with int4 per-block weights.

Each W4Linear becomes a linear over torchao's weight-only int4 tensor
(``edgegate.quant.int4_weights``), whose ``dequantize_affine`` the export keeps whole and
coremltools 9's torch frontend turns into a ``constexpr_blockwise_shift_scale`` holding the
tensor's own int4 codes and per-group scales (``frontend/torch/quantization_ops.py``
``dequantize_affine``, ``frontend/_utils.py`` ``_construct_constexpr_dequant_op``). That
constexpr exists from iOS18 on, hence the package's deployment target.

Not coremltools' own quantizer: ``linear_quantize_weights`` (linear_symmetric, int4,
per_block) re-derives each group's scale from the dequantized weight as max|w| / 7. That
gives W4's codes back where a group's largest code is +-7 (round-to-nearest, or a clipped
grid whose clamp reaches 7), but its scale only to within a float32 ulp (max|code * s| / 7 is
not always s), and other codes and scale wherever a group's largest code is below 7.
4-bit palettization (a 16-entry table per block) is Core ML's other int4 form; a table per
block would hold the 15 grid values, not the grid's scale.

After writing, the package is read back (``inspect.blockwise_weights``) and each W4Linear must
be there: int4 data equal to its codes (asymmetric codes shifted by 8, zero points likewise,
as ``int4_weights`` stores them), scales equal to its scales in the dtype the program keeps
them (float32 in an fp32 program; float16 in an fp16 one, whose compute is fp16 anyway).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgegate.errors import BadInput, ToolchainFailed
from edgegate.exporters.coreml import CoreMLExport, export_coreml, prepare_program
from edgegate.exporters.coreml.inspect import BlockwiseWeight, blockwise_weights
from edgegate.quant.int4_weights import int4_codes, w4_layers, weight_only_int4
from edgegate.quant.weight_only import W4Linear

DEPLOYMENT_TARGET = "iOS18"  # constexpr_blockwise_shift_scale


@dataclass(frozen=True)
class CoreMLW4Export:
    """What ``export_coreml_w4`` wrote: the export record, the module the package is judged
    against (the W4 model's own numerics), and each W4Linear's constexpr as read back."""

    export: CoreMLExport
    reference: nn.Module
    weights: dict[str, BlockwiseWeight]


def check_w4(model: nn.Module) -> None:
    """BadInput, before any conversion, for a model with no W4Linear."""
    if not w4_layers(model):
        raise BadInput(
            f"{type(model).__name__} has no W4Linear: prepare it for W4 (quantize --scheme w4) "
            "before exporting int4 weights to Core ML"
        )


def _carries(layer: W4Linear, weight: BlockwiseWeight) -> bool:
    codes, zero = (t.numpy() for t in int4_codes(layer))
    if weight.data_type != "int4" or weight.data.shape != codes.shape:
        return False
    scales = layer.scales.detach().numpy().astype(weight.scale.dtype)
    offset = zero if layer.zero_points is not None else None
    return (
        np.array_equal(weight.data.astype(np.int8), codes)
        and weight.scale.shape == scales.shape
        and np.array_equal(weight.scale, scales)
        and (
            weight.offset is None
            if offset is None
            else weight.offset is not None and np.array_equal(weight.offset.astype(np.int8), offset)
        )
    )


def check_carried(model: nn.Module, path: str | os.PathLike[str]) -> dict[str, BlockwiseWeight]:
    """Each W4Linear of ``model`` -> the constexpr in the package at ``path`` that holds its
    codes and scales; ToolchainFailed naming the first W4Linear that has none."""
    weights = blockwise_weights(path)
    found = {}
    for name, layer in w4_layers(model).items():
        match = next((w for w in weights if _carries(layer, w)), None)
        if match is None:
            raise ToolchainFailed(
                f"W4Linear '{name}' [{layer.out_features}x{layer.in_features}, group "
                f"{layer.group_size}] is not an int4 constexpr_blockwise_shift_scale with its "
                f"own codes and scales in the package ({len(weights)} blockwise constexprs)"
            )
        found[name] = match
    return found


def export_coreml_w4(
    model: nn.Module,
    args: tuple[torch.Tensor, ...],
    path: str | os.PathLike[str],
    *,
    input_names: list[str],
    output_names: list[str],
    dynamic_dims: Sequence[Sequence[int]],
    sequence: bool,
    precision: str = "fp16",
    bounds: dict[tuple[int, int], tuple[int, int]] | None = None,
    metadata: dict[str, str] | None = None,
    input_docs: dict[str, str] | None = None,
) -> CoreMLW4Export:
    """Write the W4-prepared ``model`` as an iOS18 .mlpackage at ``path`` whose W4Linears are
    int4 per-block constexprs (arguments as ``prepare_program`` and ``export_coreml``)."""
    check_w4(model)
    reference = weight_only_int4(model.eval())
    program = prepare_program(reference, args, dynamic_dims, sequence=sequence, bounds=bounds)
    exported = export_coreml(
        program,
        Path(path),
        input_names=input_names,
        output_names=output_names,
        precision=precision,
        metadata={**(metadata or {}), "weights": "int4 per block (W4)"},
        input_docs=input_docs,
        deployment_target=DEPLOYMENT_TARGET,
    )
    try:
        weights = check_carried(model, exported.path)
    except ToolchainFailed:
        shutil.rmtree(exported.path, ignore_errors=True)  # a package without the W4 weights
        raise
    return CoreMLW4Export(exported, reference, weights)
