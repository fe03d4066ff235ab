"""Argument shape checks for the public ops: a wrong layout is one clear error at trace time.

A gate of the wrong shape used to broadcast silently in eager mode and fail only at run time
in another runtime ("Scan inputs have inconsistent sequence lengths"). Each check compares the
sizes it can compare (ints, or torch's symbolic sizes under export) and names the argument.
"""

from __future__ import annotations

import torch


def check_layout(op: str, **layouts: tuple[torch.Tensor | None, str]) -> None:
    """Check each ``name=(tensor, 'BTHK')`` against the sizes the others fix; None is skipped.

    Letters name dims shared across arguments (B batch, T time, H heads, K key dim, V value
    dim); the first argument to use a letter fixes its size.
    """
    sizes: dict[str, tuple[str, object]] = {}
    for name, (tensor, layout) in layouts.items():
        if tensor is None:
            continue
        if tensor.dim() != len(layout):
            raise ValueError(
                f"{op}: {name} must be [{','.join(layout)}] ({len(layout)} dims), "
                f"got shape {tuple(tensor.shape)}"
            )
        for letter, size in zip(layout, tensor.shape, strict=True):
            if letter not in sizes:
                sizes[letter] = (name, size)
                continue
            first, expected = sizes[letter]
            if not _same(size, expected):
                raise ValueError(
                    f"{op}: {name} has {_DIM_NAMES[letter]} {size} where {first} has "
                    f"{expected} (expected {name} as [{','.join(layout)}], got shape "
                    f"{tuple(tensor.shape)})"
                )


_DIM_NAMES = {"B": "batch", "T": "length", "H": "heads", "K": "key dim", "V": "value dim"}


def _same(a: object, b: object) -> bool:
    """Equal sizes; symbolic sizes compare through torch's guards (a mismatch proven false)."""
    try:
        return bool(a == b)
    except Exception:  # an undecidable symbolic comparison: leave it to the runtime
        return True
