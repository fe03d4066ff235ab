"""W4Linear: a linear layer whose weight is 4-bit codes per group of input features.

Minimal version (the shared W4 interface only: the layer and round-to-nearest from an
``nn.Linear``); AWQ scaling and the ``quantize --scheme w4`` command live elsewhere.

Symmetric codes use the restricted range [-7, 7] with scale = max|w| / 7 per group, so that a
target's own symmetric quantizer, reading the dequantized weight back, recovers exactly these
codes. Asymmetric codes lie in [0, 15] with an int8 zero point per group.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SYMMETRIC_MAX = 7  # restricted range: -7..7, no -8
ASYMMETRIC_MAX = 15  # 0..15


class W4Linear(nn.Module):
    """A linear layer whose weight is 4-bit codes per group of `group_size` input features."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        group_size: int,
        *,
        bias: bool = True,
        symmetric: bool = True,
    ) -> None:
        super().__init__()
        if group_size <= 0 or in_features % group_size:
            raise ValueError(f"group size {group_size} does not divide in_features {in_features}")
        self.in_features = in_features
        self.out_features = out_features
        self.group_size = group_size
        groups = in_features // group_size
        self.register_buffer("codes", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("scales", torch.ones(out_features, groups, dtype=torch.float32))
        self.zero_points: torch.Tensor | None
        if symmetric:
            self.zero_points = None
        else:
            self.register_buffer("zero_points", torch.zeros(out_features, groups, dtype=torch.int8))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    @property
    def symmetric(self) -> bool:
        return self.zero_points is None

    def weight_dequantized(self) -> torch.Tensor:
        """float32 [out, in]: (codes - zero point) * scale, per group."""
        codes = self.codes.float().view(self.out_features, -1, self.group_size)
        if self.zero_points is not None:
            codes = codes - self.zero_points.float().unsqueeze(-1)
        return (codes * self.scales.unsqueeze(-1)).reshape(self.out_features, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight_dequantized(), self.bias)

    @classmethod
    def from_linear(cls, linear: nn.Linear, group_size: int, symmetric: bool = True) -> W4Linear:
        """Round-to-nearest 4-bit codes of ``linear``'s weight, one scale per group."""
        out_f, in_f = linear.weight.shape
        layer = cls(in_f, out_f, group_size, bias=linear.bias is not None, symmetric=symmetric)
        w = linear.weight.detach().float().view(out_f, -1, group_size)
        tiny = torch.finfo(torch.float32).tiny
        if symmetric:
            scale = w.abs().amax(-1) / SYMMETRIC_MAX
            scale = torch.where(scale > tiny, scale, torch.ones_like(scale))  # all-zero group
            codes = torch.round(w / scale.unsqueeze(-1)).clamp(-SYMMETRIC_MAX, SYMMETRIC_MAX)
        else:
            low = w.amin(-1).clamp(max=0.0)
            high = w.amax(-1).clamp(min=0.0)
            scale = (high - low) / ASYMMETRIC_MAX
            scale = torch.where(scale > tiny, scale, torch.ones_like(scale))
            zero = torch.round(-low / scale).clamp(0, ASYMMETRIC_MAX)
            codes = torch.round(w / scale.unsqueeze(-1) + zero.unsqueeze(-1))
            codes = codes.clamp(0, ASYMMETRIC_MAX)
            layer.zero_points = zero.to(torch.int8)
        layer.codes = codes.to(torch.int8).view(out_f, in_f)
        layer.scales = scale.float()
        if linear.bias is not None:
            layer.bias = nn.Parameter(linear.bias.detach().float().clone())
        return layer
