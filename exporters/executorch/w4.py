"""export_pte_8da4w: a W4-prepared model -> an XNNPACK .pte running qd8-f32-qb4w linears.

Each W4Linear becomes torchao's 8da4w linear (``edgegate.quant.xnnpack_w4``: its own codes,
scales rounded to the bfloat16 XNNPACK stores), the model is lowered as any other
(``export_pte``: dims, scans, fallbacks, smoke runs), and the written file is read back
(``xnnpack_graph``) to check that every W4Linear is an XNNPACK fully connected node with an
int8 dynamic input and a 4-bit groupwise filter holding exactly those codes and scales. A
W4Linear left to the portable kernels, or re-quantized on the way, fails the export.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from edgegate.dims import DimRange
from edgegate.errors import ToolchainFailed
from edgegate.exporters.executorch.export import PteExport, export_pte
from edgegate.exporters.executorch.xnnpack_graph import DelegatedLinear, delegated_linears
from edgegate.quant.weight_only import W4Linear
from edgegate.quant.xnnpack_w4 import check_8da4w, to_8da4w, w4_layers, xnnpack_scales

INPUT_DTYPE = "xnn_datatype_qdint8"  # int8, quantized per token at run time
FILTER_DTYPE = "xnn_datatype_qbint4"  # int4, one scale per group of input features


@dataclass(frozen=True)
class W4PteExport:
    """What ``export_pte_8da4w`` wrote: the export record, the module the program is judged
    against (8da4w linears: dynamic activation quantization included), and each W4Linear's
    fully connected node as read back from the file."""

    export: PteExport
    reference: nn.Module
    linears: dict[str, DelegatedLinear]


def _carries(layer: W4Linear, node: DelegatedLinear) -> bool:
    return (
        node.input_dtype == INPUT_DTYPE
        and node.filter_dtype == FILTER_DTYPE
        and node.shape == (layer.out_features, layer.in_features)
        and node.group_size == layer.group_size
        and node.has_bias == (layer.bias is not None)
        and node.codes is not None
        and node.scales is not None
        and torch.equal(node.codes, layer.codes.to(torch.int8))
        and torch.equal(node.scales, xnnpack_scales(layer.scales))
    )


def check_carried(
    model: nn.Module, pte: bytes | str | os.PathLike[str]
) -> dict[str, DelegatedLinear]:
    """Each W4Linear of ``model`` -> the XNNPACK node in ``pte`` that carries its codes and
    scales; ToolchainFailed naming the first W4Linear that has none."""
    nodes = delegated_linears(pte)
    found = {}
    for name, layer in w4_layers(model).items():
        match = next((node for node in nodes if _carries(layer, node)), None)
        if match is None:
            kinds = sorted({f"{n.input_dtype} x {n.filter_dtype}" for n in nodes}) or ["none"]
            raise ToolchainFailed(
                f"W4Linear '{name}' [{layer.out_features}x{layer.in_features}, group "
                f"{layer.group_size}] is not an XNNPACK qd8 x qb4w linear with its own codes "
                f"and scales in the program (its fully connected nodes: {', '.join(kinds)})"
            )
        found[name] = match
    return found


def export_pte_8da4w(
    model: nn.Module,
    args: tuple[torch.Tensor, ...],
    path: str | os.PathLike[str],
    *,
    input_names: list[str],
    output_names: list[str],
    dynamic_dims: Sequence[Sequence[int]],
    metadata: dict[str, str] | None = None,
    ranges: Sequence[DimRange] = (),
) -> W4PteExport:
    """Lower the W4-prepared ``model`` (float model with W4Linears) to an 8da4w .pte at
    ``path``; arguments as ``export_pte``. BadInput before any lowering when ``model`` has
    no W4Linear or an asymmetric one."""
    check_8da4w(model)
    reference = to_8da4w(model.eval())
    written = export_pte(
        reference,
        args,
        path,
        input_names=input_names,
        output_names=output_names,
        dynamic_dims=dynamic_dims,
        metadata=metadata,
        ranges=ranges,
    )
    try:
        carried = check_carried(model, written.path)
    except ToolchainFailed:
        written.path.unlink(missing_ok=True)  # a program that does not run the W4 weights
        raise
    return W4PteExport(written, reference, carried)
