"""W4Linear as torchao's int4 weight tensor: the form ExecuTorch and Core ML convert themselves.

torchao 0.18's ``IntxUnpackedToInt8Tensor`` (``quantize_/workflows/intx/
intx_unpacked_to_int8_tensor.py``) holds int4 codes in int8 with a scale (and zero point) per
block, and traces under ``torch.export`` to ``torchao.dequantize_affine`` feeding the linear,
preceded by a per-token int8 quantize/dequantize of the input when it carries
``activation_quantization``. ExecuTorch's XNNPACK partitioner lowers that pattern to its
qd8 x qb4w GEMM; coremltools' torch frontend turns the dequantize into a
``constexpr_blockwise_shift_scale`` (iOS18). Both then store the very codes and scales the
tensor holds, so the tensor is built from the W4Linear's own buffers here, never re-derived
from the dequantized weight (torchao's symmetric quantizer divides by 7.5, not 7).

The int4 range there is -8..7: symmetric codes (-7..7) go in as they are; asymmetric codes
(0..15 with a zero point) go in shifted by 8, codes - 8 with zero point - 8, which dequantizes
to the same (code - zero point) * scale.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from edgegate.libs import import_optional
from edgegate.quant.weight_only import W4Linear

INT4_SHIFT = 8  # asymmetric codes 0..15 -> -8..7


def w4_layers(model: nn.Module) -> dict[str, W4Linear]:
    """Every W4Linear in ``model`` by its qualified name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, W4Linear)}


def int4_codes(layer: W4Linear) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes, zero points) in the int4 range -8..7, int8: as stored, or shifted by 8."""
    codes = layer.codes.to(torch.int8)
    if layer.zero_points is None:
        return codes.contiguous(), torch.zeros_like(layer.scales, dtype=torch.int8)
    shifted = (codes.to(torch.int16) - INT4_SHIFT).to(torch.int8)
    zero = (layer.zero_points.to(torch.int16) - INT4_SHIFT).to(torch.int8)
    return shifted.contiguous(), zero.contiguous()


def int4_tensor(
    layer: W4Linear, *, scales: torch.Tensor | None = None, activation: str | None = None
) -> torch.Tensor:
    """torchao's int4 tensor of ``layer`` (``scales`` in place of its own, if given), with
    torchao's ``activation_quantization`` (None: weight only)."""
    with torch.no_grad():
        torchao = import_optional("torchao.quantization")
        codes, zero = int4_codes(layer)
        return torchao.IntxUnpackedToInt8Tensor(
            qdata=codes,
            scale=(layer.scales if scales is None else scales).float().contiguous(),
            zero_point=zero,
            target_dtype=torch.int4,
            block_size=(1, layer.group_size),
            dtype=torch.float32,
            activation_quantization=activation,
        )


def as_linear(layer: W4Linear, weight: torch.Tensor) -> nn.Linear:
    """An ``nn.Linear`` with ``weight`` (a torchao tensor) and ``layer``'s bias."""
    linear = nn.Linear(
        layer.in_features, layer.out_features, bias=layer.bias is not None, device="meta"
    )
    linear.weight = nn.Parameter(weight, requires_grad=False)
    if layer.bias is not None:
        linear.bias = nn.Parameter(layer.bias.detach().float().clone(), requires_grad=False)
    return linear


def replace_w4(model: nn.Module, make: Callable[[W4Linear], nn.Module]) -> nn.Module:
    """A copy of ``model`` (in eval mode) with each W4Linear replaced by ``make(layer)``."""
    converted = copy.deepcopy(model).eval()
    for name in list(w4_layers(converted)):
        parent_name, _, child = name.rpartition(".")
        parent = converted.get_submodule(parent_name) if parent_name else converted
        setattr(parent, child, make(getattr(parent, child)))
    return converted


def weight_only_int4(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with each W4Linear a linear over torchao's weight-only int4 tensor:
    what coremltools converts to blockwise int4 constexprs. It computes what the W4Linear
    computes ((code - zero point) * scale, per group)."""
    return replace_w4(model, lambda layer: as_linear(layer, int4_tensor(layer)))
