"""Pixel preprocessing shared by digits, image folders and uint8 .npz images.

One place for the scaling, normalisation, resizing and channel rules, so a model
calibrated on user images sees the same input statistics as one trained on digits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgegate.errors import BadInput

# Mean and std of the digits train split after scaling to [0, 1] (computed once, at 8x8,
# then frozen: changing them would silently shift every trained model's inputs).
IMAGE_MEAN: float = 0.3049
IMAGE_STD: float = 0.3759

# ITU-R 601 luma weights, the same ones Pillow uses for RGB -> L.
_LUMA = (0.299, 0.587, 0.114)


def check_size(size: int) -> int:
    """Return ``size`` if it is a positive int, else raise BadInput."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise BadInput(f"image size must be a positive integer, got {size!r}")
    return size


def check_channels(channels: int) -> int:
    """Return ``channels`` if it is 1 or 3, else raise BadInput."""
    if isinstance(channels, bool) or channels not in (1, 3):
        raise BadInput(f"channels must be 1 or 3, got {channels!r}")
    return int(channels)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """Map [0, 1] pixels to the fixed zero-mean, unit-std input range."""
    return (x - IMAGE_MEAN) / IMAGE_STD


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of a float [N, C, H, W] batch to [N, C, size, size]."""
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def convert_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Convert a float [N, 1|3, H, W] batch to ``channels`` (replicate grey, or luma)."""
    have = x.shape[1]
    if have == channels:
        return x
    if have == 1 and channels == 3:
        return x.expand(-1, 3, -1, -1).contiguous()
    if have == 3 and channels == 1:
        w = torch.tensor(_LUMA, dtype=x.dtype).view(1, 3, 1, 1)
        return (x * w).sum(dim=1, keepdim=True)
    raise BadInput(f"cannot convert {have}-channel images to {channels} channels")
