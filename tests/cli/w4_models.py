"""A model with no linear layer, for `quantize --scheme w4`'s bad-input test."""

from torch import nn


def conv_only() -> nn.Module:
    """images [B, 3, H, W] -> logits [B, 10], convolutions and pooling only."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Conv2d(8, 10, 1),
        nn.Flatten(),
    )  # fmt: skip
