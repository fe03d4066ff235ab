"""INT4 groups: round-to-nearest codes with one scale (and zero point) per group of inputs.

Shared by the W4 layers (``edgegate.quant.weight_only``) and the AWQ searches
(``edgegate.quant.awq``), which round candidate weights the way the layers will.
"""

from __future__ import annotations

import torch

from edgegate.errors import BadInput

W4_MAX = 7  # symmetric INT4: codes in [-8, 7], the full two's-complement range
W4_MIN = -8
U4_MAX = 15  # asymmetric INT4: codes in [0, 15]
W8_MAX = 127  # the kept layers' int8 per-channel weights, symmetric
MIN_GROUP = 16  # ONNX Runtime's MatMulNBits: a power of two, at least 16


def quantize_groups(
    weight: torch.Tensor,
    group_size: int,
    symmetric: bool = True,
    clip: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Round-to-nearest INT4 of ``weight`` [out, in] per group of ``group_size`` inputs.

    ``clip`` ([out, in // group_size], in (0, 1]) shrinks each group's range before rounding
    (AWQ's clipping search picks it). Symmetric groups use all 16 codes: the scale is
    max(-min / 8, max / 7), so a group whose largest magnitude is negative gets a step 7/8 as
    wide as a [-7, 7] grid would give it (every target stores -8: ONNX int4, MatMulNBits with
    zero point 8, XNNPACK's code + 8 nibbles, Core ML's int4). Returns codes (int8 [out, in]),
    scales (float32 [out, in // group_size]) and, asymmetric only, zero points (int8, same
    shape as scales).
    A group of zeros gets scale 1 and codes 0.
    """
    out_f, in_f = weight.shape
    if in_f % group_size:
        raise BadInput(f"group size {group_size} does not divide in_features {in_f}")
    w = weight.detach().float().reshape(out_f, in_f // group_size, group_size)
    ratio = 1.0 if clip is None else clip.float()
    if symmetric:
        reach = torch.maximum(-w.amin(-1) / -W4_MIN, w.amax(-1) / W4_MAX) * ratio
        scales = torch.where(reach > 0, reach, torch.ones_like(reach))
        codes = torch.round(w / scales[..., None]).clamp(W4_MIN, W4_MAX)
        return codes.reshape(out_f, in_f).to(torch.int8), scales.contiguous(), None
    low, high = w.amin(-1) * ratio, w.amax(-1) * ratio
    spread = high - low
    # a constant group: its value is one step from the zero point, exactly
    fallback = torch.where(low.abs() > 0, low.abs(), torch.ones_like(low))
    scales = torch.where(spread > 0, spread / U4_MAX, fallback)
    zero_points = torch.round(-low / scales).clamp(0, U4_MAX)
    codes = (torch.round(w / scales[..., None]) + zero_points[..., None]).clamp(0, U4_MAX)
    return (
        codes.reshape(out_f, in_f).to(torch.int8),
        scales.contiguous(),
        zero_points.to(torch.int8).contiguous(),
    )


def dequantize_groups(
    codes: torch.Tensor,
    scales: torch.Tensor,
    zero_points: torch.Tensor | None,
    group_size: int,
) -> torch.Tensor:
    """float32 [out, in]: (codes - zero point) * scale, per group of ``group_size`` inputs."""
    out_f, in_f = codes.shape
    grouped = codes.float().reshape(out_f, in_f // group_size, group_size)
    if zero_points is not None:
        grouped = grouped - zero_points.float()[..., None]
    return (grouped * scales.float()[..., None]).reshape(out_f, in_f)
