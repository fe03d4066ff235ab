"""Gated Compression layer (Li et al. 2023): early-stop gate + channel compression.

Training losses (edgegate's own recipe, design.md §Papers):
- gate: binary cross-entropy of `gate_prob` against "sample is positive";
- compression: `lambda * gc.l1_penalty()`, the mean channel-gate value. The channel gate is
  hard-sigmoid(parameter), so the penalty drives channels to an exact 0 and they stop
  being passed on; `gc.compression_ratio()` reports the fraction still passed.
"""

from __future__ import annotations

import torch
from torch import nn

from edgegate.models.blocks.gate import Gate


class GatedCompression(nn.Module):
    """features -> (gate_prob [B], features * channel_gate).

    `gate_prob` is the probability that the sample is positive (run stage 2); the channel
    gate is learned per channel, input-independent, and reaches exact zeros, so a deployed
    stage 1 sends only the nonzero channels to stage 2.
    """

    def __init__(
        self, channels: int, hidden: int = 32, channel_init: float = 2.5, sharpness: float = 20.0
    ) -> None:
        super().__init__()
        self.channels = channels
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(1),
            nn.Linear(channels, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 1),
        )
        self.gate = Gate("sigmoid")
        # hard-sigmoid has zero gradient at |x| >= 3, so start inside (-3, 3): 2.5 -> 0.917.
        # Adam moves a parameter by about lr per step, far too little to cross the 5.5 units
        # from 2.5 to the exact zero at -3; the sharpness factor rescales that distance.
        self.sharpness = float(sharpness)
        self.channel_logits = nn.Parameter(
            torch.full((channels,), float(channel_init) / self.sharpness)
        )
        self.channel_gate = Gate("hardsigmoid")

    def gate_logit(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid gate score [B]; use with BCE-with-logits if preferred."""
        return self.head(x).flatten()

    def channel_values(self) -> torch.Tensor:
        """Per-channel gate in [0, 1] (exact 0 = channel never passed on)."""
        return self.channel_gate(self.channel_logits * self.sharpness)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        prob = self.gate(self.gate_logit(x))
        compressed = x * self.channel_values().view(1, -1, 1, 1)
        return prob, compressed

    def l1_penalty(self, features: torch.Tensor | None = None) -> torch.Tensor:
        """Differentiable sparsity loss: mean channel gate, or mean |features| if given."""
        if features is not None:
            return features.abs().mean()
        return self.channel_values().abs().mean()

    @torch.no_grad()
    def compression_ratio(self) -> float:
        """Fraction of channels passed on with a nonzero gate (1.0 = no compression)."""
        return float((self.channel_values() > 0).float().mean())
