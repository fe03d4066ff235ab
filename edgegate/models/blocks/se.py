"""Squeeze-and-excitation, MobileNetV3 style: squeeze width make_divisible(expanded/4, 8)."""

from __future__ import annotations

import torch
from torch import nn

from edgegate.models.blocks.common import make_divisible
from edgegate.models.blocks.gate import Gate, GateKind


class SqueezeExcite(nn.Module):
    """u * gate(W2 relu(W1 GAP(u))): a per-channel [0, 1] scale computed from the input.

    The gate is a `Gate` module so its output range is known to the quantizer. MobileNetV3
    uses the hard-sigmoid gate (cheap on integer hardware); "sigmoid" is the original SE.
    """

    def __init__(
        self, channels: int, squeeze: int | None = None, gate: GateKind = "hardsigmoid"
    ) -> None:
        super().__init__()
        squeeze = make_divisible(channels / 4, 8) if squeeze is None else squeeze
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.act = nn.ReLU()
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.gate = Gate(gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))
        return x * s
