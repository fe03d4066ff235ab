"""W4Linear -> XNNPACK's 8da4w linear: int8 dynamic per-token activations, int4 group weights.

ExecuTorch 1.5.1's XNNPACK partitioner lowers a linear to XNNPACK's qd8-f32-qb4w GEMM when
its input passes through torchao's ``choose_qparams_affine`` / ``quantize_affine`` /
``dequantize_affine`` (per token, int8, asymmetric) and its weight through a groupwise
``dequantize_affine`` of int8-held codes in [-8, 7] (``backends/xnnpack/utils/quant_utils.py``
``is_per_channel_group``, ``partition/config/gemm_configs.py``). torchao 0.18's
``IntxUnpackedToInt8Tensor`` (``quantize_/workflows/intx/intx_unpacked_to_int8_tensor.py``)
traces to exactly that under ``torch.export`` when it is a linear's weight with
``activation_quantization="int8_asym_per_token"`` (what ``Int8DynamicActivationIntxWeightConfig``
builds). It is built here from the W4Linear's own codes and scales, not through
``quantize_``: torchao's symmetric quantizer divides by (qmax - qmin) / 2 = 7.5, not 7, so it
would re-derive other codes and scales from the dequantized weight.

Three limits of XNNPACK's 4-bit weights, all from ExecuTorch's serialiser
(``backends/xnnpack/operators/node_visitor.py``):

- They are symmetric: codes are stored as ``code + 8`` in unsigned nibbles and zero points are
  dropped. An asymmetric W4Linear (codes 0..15 with zero points) is refused.
- Group sizes are multiples of 32; others are refused here, before lowering.
- Group scales are stored as bfloat16 (``get_quant_params``: ``scale.to(torch.bfloat16)``).
  The converted module carries the scales rounded the same way, so it computes what the
  program computes; the codes are kept exactly. The rounding moves a scale by at most 2**-8
  of itself (``scale_rounding`` reports the largest change).
"""

from __future__ import annotations

import torch
from torch import nn

from edgegate.errors import BadInput
from edgegate.libs import import_optional
from edgegate.quant.int4_weights import as_linear, int4_tensor, replace_w4, w4_layers
from edgegate.quant.weight_only import W4Linear, W8Linear

SCALE_DTYPE = torch.bfloat16  # what XNNPACK's qb4w stores per group
ACTIVATION_QUANTIZATION = "int8_asym_per_token"  # torchao's 8-bit dynamic per-token input
GROUP = 32  # XNNPACK's qb4w block: group sizes are multiples of it

__all__ = [
    "check_8da4w",
    "int4_weight",
    "scale_rounding",
    "to_8da4w",
    "to_linear_8da4w",
    "w4_layers",
    "xnnpack_scales",
]


def check_8da4w(model: nn.Module) -> None:
    """BadInput, before any lowering, when ``model`` cannot become an 8da4w program: it has no
    W4Linear, one is asymmetric (XNNPACK's 4-bit weights have no zero points), or one has a
    group size that is not a multiple of 32 (ExecuTorch's XNNPACK serialiser asserts it,
    ``node_visitor.py`` ``_check_per_channel_group_params``)."""
    layers = w4_layers(model)
    if not layers:
        raise BadInput(
            f"{type(model).__name__} has no W4Linear: prepare it for W4 (quantize --scheme w4) "
            "before lowering to ExecuTorch 8da4w"
        )
    asymmetric = [name for name, layer in layers.items() if layer.zero_points is not None]
    if asymmetric:
        raise BadInput(
            f"W4Linear '{asymmetric[0]}' is asymmetric (codes 0..15 with zero points); "
            "XNNPACK's 4-bit weights are symmetric: quantize with symmetric codes for executorch"
        )
    odd = [(name, layer.group_size) for name, layer in layers.items() if layer.group_size % GROUP]
    if odd:
        raise BadInput(
            f"W4Linear '{odd[0][0]}' has group size {odd[0][1]}; XNNPACK's 4-bit group weights "
            f"need a multiple of {GROUP}: use --group-size 32, 64, 128 ... for executorch"
        )


def xnnpack_scales(scales: torch.Tensor) -> torch.Tensor:
    """``scales`` as XNNPACK stores them (bfloat16), back in float32."""
    return scales.to(SCALE_DTYPE).to(torch.float32)


def scale_rounding(model: nn.Module) -> float:
    """The largest relative change bfloat16 storage makes to any group scale of ``model``."""
    worst = 0.0
    for layer in w4_layers(model).values():
        s = layer.scales.float()
        change = ((xnnpack_scales(s) - s).abs() / s.abs().clamp_min(1e-30)).max()
        worst = max(worst, float(change))
    return worst


def int4_weight(layer: W4Linear) -> torch.Tensor:
    """torchao's 8da4w weight tensor holding ``layer``'s codes and (bfloat16-rounded) scales."""
    if layer.zero_points is not None:
        raise BadInput("an asymmetric W4Linear has no XNNPACK 8da4w form")
    return int4_tensor(
        layer, scales=xnnpack_scales(layer.scales), activation=ACTIVATION_QUANTIZATION
    )


def to_linear_8da4w(layer: W4Linear) -> nn.Linear:
    """An ``nn.Linear`` whose weight is ``int4_weight(layer)`` (bias kept in float32)."""
    return as_linear(layer, int4_weight(layer))


def to_linear_8da8w(layer: W8Linear) -> nn.Linear:
    """A kept layer (int8 per output channel) as XNNPACK's qd8-f32-qc8w linear: its codes and
    scales, activations quantized per token as for the W4 layers. Left as a W8Linear, its
    dequantization (codes times scales) would run at every call in portable kernels: measured
    on gla-lm-25m, that made 8da4w decode 2x slower than FP32."""
    with torch.no_grad():
        torchao = import_optional("torchao.quantization")
        scales = layer.scales.float().reshape(layer.out_features, 1).contiguous()
        weight = torchao.IntxUnpackedToInt8Tensor(
            qdata=layer.codes.to(torch.int8).contiguous(),
            scale=scales,
            zero_point=torch.zeros_like(scales, dtype=torch.int8),
            target_dtype=torch.int8,
            block_size=(1, layer.in_features),
            dtype=torch.float32,
            activation_quantization=ACTIVATION_QUANTIZATION,
        )
    return as_linear(layer, weight)


def to_8da4w(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every W4Linear replaced by its 8da4w linear, and every kept
    int8 layer (W8Linear) by its 8da8w one.

    The copy is the reference an 8da4w .pte is judged against: it quantizes activations per
    token as the program does and uses the program's own weight codes and scales."""
    check_8da4w(model)
    converted = replace_w4(model, to_linear_8da4w)
    for name, module in list(converted.named_modules()):
        if isinstance(module, W8Linear):
            parent, _, child = name.rpartition(".")
            owner = converted.get_submodule(parent) if parent else converted
            setattr(owner, child, to_linear_8da8w(module))
    return converted
