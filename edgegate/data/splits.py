"""Split names shared by every built-in dataset, so callers can't typo a split silently."""

from __future__ import annotations

from edgegate.errors import BadInput

SPLITS: tuple[str, ...] = ("train", "calib", "test")


def check_split(split: str) -> str:
    """Return ``split`` if it is a known split name, else raise BadInput."""
    if split not in SPLITS:
        raise BadInput(f"unknown split '{split}': expected one of {', '.join(SPLITS)}")
    return split
