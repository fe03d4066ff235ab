"""Built-in digits images (scikit-learn's bundled 8x8 digits, no download) with a fixed split.

The split is stratified and drawn with numpy's legacy RandomState, whose stream is frozen,
so train/calib/test hold the same images on every machine and every release.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from edgegate.data.imagedata import ImageData
from edgegate.data.imaging import (
    IMAGE_MEAN,
    IMAGE_STD,
    check_channels,
    check_size,
    convert_channels,
    normalize,
    resize,
)
from edgegate.data.splits import check_split
from edgegate.errors import BadInput

__all__ = [
    "DEFAULT_POSITIVE_CLASS",
    "DIGITS_SPLIT_SIZES",
    "IMAGE_MEAN",
    "IMAGE_STD",
    "NUM_DIGITS_CLASSES",
    "binary_targets",
    "digits",
    "digits_indices",
]

NUM_DIGITS_CLASSES = 10
# The "wake word" class of the gated-compression setting; every other class is negative.
DEFAULT_POSITIVE_CLASS = 0
DIGITS_SPLIT_SIZES: dict[str, int] = {"train": 1257, "calib": 180, "test": 360}
_SEED = 20240607
_PIXEL_MAX = 16.0  # digits pixels are counts 0..16


@lru_cache(maxsize=1)
def _raw() -> tuple[np.ndarray, np.ndarray]:
    """Images [1797, 8, 8] float64 in 0..16 and labels [1797] int64, loaded once."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images, bunch.target.astype(np.int64)


def _quotas(counts: np.ndarray, total: int) -> np.ndarray:
    """Split ``total`` over classes in proportion to ``counts`` (largest remainder)."""
    exact = counts * total / counts.sum()
    quota = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - quota), kind="stable")
    quota[order[: total - quota.sum()]] += 1
    return quota


@lru_cache(maxsize=1)
def _split_indices() -> dict[str, np.ndarray]:
    _, labels = _raw()
    counts = np.bincount(labels, minlength=NUM_DIGITS_CLASSES)
    test_q = _quotas(counts, DIGITS_SPLIT_SIZES["test"])
    calib_q = _quotas(counts, DIGITS_SPLIT_SIZES["calib"])
    rng = np.random.RandomState(_SEED)
    parts: dict[str, list[np.ndarray]] = {"train": [], "calib": [], "test": []}
    for c in range(NUM_DIGITS_CLASSES):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        t, k = test_q[c], calib_q[c]
        parts["test"].append(idx[:t])
        parts["calib"].append(idx[t : t + k])
        parts["train"].append(idx[t + k :])
    out = {name: np.sort(np.concatenate(p)) for name, p in parts.items()}
    for name, idx in out.items():
        idx.setflags(write=False)
        assert len(idx) == DIGITS_SPLIT_SIZES[name], (name, len(idx))
    return out


def digits_indices(split: str) -> np.ndarray:
    """Sorted indices into ``load_digits()`` of one split (read-only)."""
    return _split_indices()[check_split(split)]


def digits(split: str, size: int = 32, channels: int = 1) -> ImageData:
    """Digits images of one split as normalised float32 [N, channels, size, size]."""
    check_size(size)
    check_channels(channels)
    idx = digits_indices(split)
    images, labels = _raw()
    x = torch.from_numpy(images[idx] / _PIXEL_MAX).to(torch.float32).unsqueeze(1)
    x = normalize(convert_channels(resize(x, size), channels))
    y = torch.from_numpy(labels[idx].copy())
    classes = tuple(str(c) for c in range(NUM_DIGITS_CLASSES))
    return ImageData(images=x, labels=y, name=f"digits/{split}", classes=classes)


def binary_targets(
    labels: torch.Tensor, positive_class: int = DEFAULT_POSITIVE_CLASS
) -> torch.Tensor:
    """Float32 targets for a gate: 1.0 where the label is the positive class, else 0.0."""
    if isinstance(positive_class, bool) or not isinstance(positive_class, int | np.integer):
        raise BadInput(f"positive class must be an integer, got {positive_class!r}")
    if positive_class < 0:
        raise BadInput(f"positive class must be >= 0, got {positive_class}")
    if not isinstance(labels, torch.Tensor) or labels.ndim != 1 or labels.is_floating_point():
        raise BadInput("labels must be a 1-D integer tensor to build binary targets")
    return (labels == int(positive_class)).to(torch.float32)
