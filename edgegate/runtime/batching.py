"""Feeding a runtime at most the batch it was built for: a feed cut into row slices, the
slices' outputs joined back. TensorRT engines take at most their profile's batch (8 in a kit),
and validation sends hundreds of rows in one call."""

from __future__ import annotations

import numpy as np

from edgegate.errors import BadInput


def batch_slices(rows: int, limit: int | None) -> list[slice]:
    """Row slices of at most ``limit`` rows covering ``rows`` (one slice without a limit)."""
    if limit is None or rows <= limit:
        return [slice(0, rows)]
    if limit < 1:
        raise ValueError(f"a batch limit must be at least 1, got {limit}")
    return [slice(start, min(start + limit, rows)) for start in range(0, rows, limit)]


def split_feed(feed: dict[str, np.ndarray], limit: int | None) -> list[dict[str, np.ndarray]]:
    """``feed`` cut along the batch axis into pieces of at most ``limit`` rows (scalars go
    whole into every piece). Cutting needs every batched input to carry the same rows."""
    rows = {len(value) for value in feed.values() if np.ndim(value)}
    count = max(rows, default=0)
    slices = batch_slices(count, limit)
    if len(slices) == 1:
        return [feed]
    if len(rows) > 1:
        raise BadInput(f"the inputs' batches differ ({sorted(rows)}): one batch feeds them all")
    return [
        {name: value[s] if np.ndim(value) else value for name, value in feed.items()}
        for s in slices
    ]


def join_outputs(pieces: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The outputs of the pieces of one feed, joined along the batch axis in order."""
    if len(pieces) == 1:
        return pieces[0]
    return {name: np.concatenate([piece[name] for piece in pieces]) for name in pieces[0]}
