"""Dynamic input dims: one naming for every target, and the ranges an export declares.

Every exporter names a varying dim the same way (``batch``, ``seq_len``, ``height``,
``width``), so a manifest reads alike whichever target wrote it. A ``DimRange`` is what an
export promises for one dim: it runs, and matches PyTorch, from ``low`` to ``high``; the sizes
in ``points()`` are the ones actually checked (the smallest, the traced one, an odd size
between, the largest).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

BATCH = "batch"
PAST = "past_len"  # a streaming step's KV cache length (the tokens seen so far)


def dim_name(input_name: str, rank: int, floating: bool, axis: int) -> str:
    """The symbolic name of dim ``axis`` of an input of rank ``rank``: batch first, a token
    sequence's length, a KV cache state's length, an image's (or feature map's) sides, else
    ``<input>_dim<axis>``."""
    if axis == 0:
        return BATCH
    if floating and rank == 4 and axis == 2 and input_name.startswith("state"):
        return PAST  # a KV cache state [B, kv_heads, past, head_dim]: the stream's length
    if not floating and rank == 2 and axis == 1:
        return "seq_len"
    if rank == 4 and axis in (2, 3):
        return ("height", "width")[axis - 2]
    return f"{input_name}_dim{axis}"


def shapes_for_signature(forward: Callable[..., Any], shapes: Sequence[Any]) -> tuple[Any, ...]:
    """``shapes`` (one entry per positional input) as torch.export binds them to ``forward``:
    a ``forward(x, *states)`` takes its varargs tail as one nested tuple."""
    params = list(inspect.signature(forward).parameters.values())
    for index, param in enumerate(params):
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            return (*shapes[:index], tuple(shapes[index:]))
    return tuple(shapes)


@dataclass(frozen=True)
class DimRange:
    """The sizes one dynamic dim of one input takes: ``low <= traced <= high``."""

    input: str
    index: int  # the input's position
    axis: int
    name: str
    low: int
    traced: int
    high: int

    @property
    def label(self) -> str:
        return f"{self.input}.{self.name}"

    @property
    def fixed(self) -> bool:
        return self.low == self.high

    def points(self) -> tuple[int, ...]:
        """The sizes a check runs: both ends, the traced size and an odd size between the
        ends (a chunked loop or a padded block tends to break at odd lengths). The batch gets
        2 as its middle point, so that a batch above 1 is always among them."""
        if self.name == BATCH:
            middle = min(2, self.high)
        else:
            middle = (self.low + self.high) // 2 | 1
            if middle > self.high:
                middle = self.high
        return tuple(sorted({self.low, self.traced, middle, self.high}))

    def with_bounds(self, low: int, high: int) -> DimRange:
        return DimRange(self.input, self.index, self.axis, self.name, low, self.traced, high)

    def to_dict(self, checked: bool = True) -> dict[str, Any]:
        record = asdict(self)
        record["min"], record["max"] = record.pop("low"), record.pop("high")
        record.pop("index")
        if checked:
            record["checked"] = list(self.points())
        return record

    @classmethod
    def from_dict(cls, index: int, record: dict[str, Any]) -> DimRange:
        return cls(
            str(record["input"]),
            index,
            int(record["axis"]),
            str(record["name"]),
            int(record["min"]),
            int(record["traced"]),
            int(record["max"]),
        )


@dataclass(frozen=True)
class FixedDim:
    """A dim that was asked to vary but is fixed in the export, and why."""

    input: str
    axis: int
    name: str
    size: int
    reason: str

    @property
    def label(self) -> str:
        return f"{self.input}.{self.name}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        return f"{self.label} fixed at {self.size}: {self.reason}"
