"""MobileNetV3 split by a Gated Compression layer into two deployable stages.

stage1 (always on): stem + early blocks -> GC -> (gate_prob, compressed features).
stage2 (run only when gate_prob >= threshold): remaining blocks -> classifier logits.

Training (the lead's recipe): cross-entropy on logits + BCE(gate_prob, label ==
positive_class) + lambda * model.gc.l1_penalty(). The full forward returns (logits,
gate_prob) and is exactly stage2(stage1(x)[1]).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from edgegate.models.blocks import GatedCompression
from edgegate.models.mobilenet_v3 import ClassifierHead, build_features, init_weights


class GCStage1(nn.Module):
    """images -> (gate_prob [B], compressed features [B, C, H/8, W/8])."""

    def __init__(self, layers: list[nn.Module], gc: GatedCompression) -> None:
        super().__init__()
        self.features = nn.Sequential(*layers)
        self.gc = gc

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.gc(self.features(x))


class GCStage2(nn.Module):
    """compressed features -> logits [B, num_classes]."""

    def __init__(self, layers: list[nn.Module], head: nn.Module) -> None:
        super().__init__()
        self.features = nn.Sequential(*layers)
        self.head = head

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(z))


@dataclass
class TwoStageOutput:
    """Result of early-stop inference: stage 2 ran only on rows where `passed` is True."""

    gate_prob: torch.Tensor  # [B]
    passed: torch.Tensor  # [B] bool, gate_prob >= threshold
    logits: torch.Tensor  # [passed.sum(), num_classes], rows in batch order


class GCMobileNet(nn.Module):
    """images -> (logits [B, num_classes], gate_prob [B])."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        width: float = 0.5,
        last_channel: int = 256,
        se_gate: Literal["hardsigmoid", "sigmoid"] = "hardsigmoid",
        dropout: float = 0.1,
        gc_after: int = 3,
        gc_hidden: int = 32,
        positive_class: int = 0,
        threshold: float = 0.5,
    ) -> None:
        super().__init__()
        layers, cout = build_features(in_channels, width, se_gate)
        split = gc_after + 1  # the stem plus `gc_after` inverted-residual blocks
        if not 1 <= gc_after < len(layers) - 1:
            raise ValueError(f"gc_after must lie in [1, {len(layers) - 2}], got {gc_after}")
        if not 0 <= positive_class < num_classes:
            raise ValueError(f"positive_class {positive_class} outside [0, {num_classes})")
        gc_channels = layers[split - 1].block[-1][0].out_channels
        self.stage1 = GCStage1(layers[:split], GatedCompression(gc_channels, gc_hidden))
        self.stage2 = GCStage2(
            layers[split:], ClassifierHead(cout, last_channel, num_classes, dropout)
        )
        self.positive_class = positive_class
        self.threshold = float(threshold)
        init_weights(self)

    @property
    def gc(self) -> GatedCompression:
        return self.stage1.gc

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gate_prob, z = self.stage1(x)
        return self.stage2(z), gate_prob

    @torch.no_grad()
    def two_stage(self, x: torch.Tensor) -> TwoStageOutput:
        """Early stop: stage 2 runs only on samples with gate_prob >= threshold."""
        gate_prob, z = self.stage1(x)
        passed = gate_prob >= self.threshold
        return TwoStageOutput(gate_prob, passed, self.stage2(z[passed]))


def gc_mobilenet(
    width: float = 0.5,
    num_classes: int = 10,
    in_channels: int = 3,
    last_channel: int = 256,
    se_gate: Literal["hardsigmoid", "sigmoid"] = "hardsigmoid",
    dropout: float = 0.1,
    gc_after: int = 3,
    positive_class: int = 0,
    threshold: float = 0.5,
) -> GCMobileNet:
    """Zoo factory `gc-mobilenet` (GC at stride 8 by default)."""
    return GCMobileNet(
        num_classes,
        in_channels,
        width,
        last_channel,
        se_gate,
        dropout,
        gc_after=gc_after,
        positive_class=positive_class,
        threshold=threshold,
    )
