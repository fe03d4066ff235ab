"""The exportable twin of a W4-prepared model: each weight-only layer as one custom op.

``torch.export`` keeps ``edgegate::weight_only_linear`` as one node whose inputs are the
layer's codes, scales and zero points as they are (no float weight is ever materialised), and
the ONNX exporter writes it as one ``edgegate.WeightOnlyLinear`` node; each target then lowers
that node to its runtime's form (``edgegate.exporters.onnx.weight_only``). The eager op
computes what ``W4Linear`` computes, so the twin and the fake-quant model agree exactly.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from edgegate.quant.weight_only import WEIGHT_ONLY_TYPES, dequantize_groups


@torch.library.custom_op("edgegate::weight_only_linear", mutates_args=())
def weight_only_linear(
    x: torch.Tensor,
    codes: torch.Tensor,
    scales: torch.Tensor,
    zero_points: torch.Tensor,
    bias: torch.Tensor,
    group_size: int,
    bits: int,
    symmetric: bool,
    has_bias: bool,
) -> torch.Tensor:
    """x @ dequant(codes)^T (+ bias); ``zero_points`` and ``bias`` are ignored when
    ``symmetric`` / not ``has_bias`` (they are always passed, so the ONNX node has a fixed
    arity)."""
    weight = dequantize_groups(codes, scales, None if symmetric else zero_points, group_size)
    return F.linear(x, weight.to(x.dtype), bias if has_bias else None)


@weight_only_linear.register_fake
def _(x, codes, scales, zero_points, bias, group_size, bits, symmetric, has_bias):
    return x.new_empty(*x.shape[:-1], codes.shape[0])


class WeightOnlyExport(nn.Module):
    """One weight-only layer as the custom op, its integer buffers carried as they are."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.group_size, self.bits = layer.group_size, layer.bits
        self.symmetric, self.has_bias = layer.symmetric, layer.bias is not None
        self.register_buffer("codes", layer.codes.clone())
        self.register_buffer("scales", layer.scales.clone())
        zp = layer.zero_points if layer.zero_points is not None else torch.zeros_like(layer.scales)
        self.register_buffer("zero_points", zp.to(torch.int8).clone())
        out_features = layer.codes.shape[0]
        bias = layer.bias.detach() if layer.bias is not None else torch.zeros(out_features)
        self.register_buffer("bias", bias.float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.edgegate.weight_only_linear(
            x,
            self.codes,
            self.scales,
            self.zero_points,
            self.bias,
            self.group_size,
            self.bits,
            self.symmetric,
            self.has_bias,
        )


def exportable_w4(model: nn.Module) -> nn.Module:
    """A copy of a W4-prepared model with every weight-only layer as ``WeightOnlyExport``."""
    model = copy.deepcopy(model)
    for name, module in list(model.named_modules()):
        if isinstance(module, WEIGHT_ONLY_TYPES):
            parent, _, attr = name.rpartition(".")
            setattr(
                model.get_submodule(parent) if parent else model, attr, WeightOnlyExport(module)
            )
    return model
