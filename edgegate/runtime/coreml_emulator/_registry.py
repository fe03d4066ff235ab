"""The op table: each MIL op type -> a numpy function of its arguments.

An op function receives `Args` and returns one array (or a tuple, one per output) in any
dtype; the engine then casts each result to the dtype the program declares for that output
(fp16 outputs are rounded there) and checks it against the declared static dims.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

OpFn = Callable[["Args"], Any]
OPS: dict[str, OpFn] = {}


class UnsupportedMILOp(NotImplementedError):
    """A MIL op type the emulator does not implement (or a form of it that it does not)."""

    def __init__(self, op_type: str, op_name: str, detail: str = "") -> None:
        self.op_type = op_type
        self.op_name = op_name
        extra = f": {detail}" if detail else ""
        super().__init__(
            f"MIL op '{op_type}' (op '{op_name}') is not supported by the Core ML emulator{extra}"
        )


class MILEmulationError(RuntimeError):
    """An op produced a result that contradicts the type the program declares for it."""


def register(*names: str) -> Callable[[OpFn], OpFn]:
    def wrap(fn: OpFn) -> OpFn:
        for name in names:
            OPS[name] = fn
        return fn

    return wrap


_MISSING = object()


class Args:
    """One op's arguments by parameter name, plus what it declares about its outputs."""

    __slots__ = ("op_type", "op_name", "_values", "out_dtypes")

    def __init__(
        self, op_type: str, op_name: str, values: dict[str, list[Any]], out_dtypes: list[Any]
    ) -> None:
        self.op_type = op_type
        self.op_name = op_name
        self._values = values
        self.out_dtypes = out_dtypes

    def __getitem__(self, param: str) -> Any:
        if param not in self._values:
            raise UnsupportedMILOp(self.op_type, self.op_name, f"missing argument '{param}'")
        return self._values[param][0]

    def get(self, param: str, default: Any = None) -> Any:
        values = self._values.get(param, _MISSING)
        return default if values is _MISSING else values[0]

    def has(self, param: str) -> bool:
        return param in self._values

    def list(self, param: str) -> list[Any]:
        return list(self._values.get(param, []))

    def int(self, param: str, default: Any = _MISSING) -> int:
        value = self.get(param, default)
        if value is _MISSING:
            return int(self[param])
        return int(value)

    def ints(self, param: str, default: Any = None) -> list[int] | None:
        value = self.get(param, _MISSING)
        if value is _MISSING:
            return default
        return [int(v) for v in np.asarray(value).reshape(-1)]

    def bool(self, param: str, default: bool = False) -> bool:
        value = self.get(param, _MISSING)
        return default if value is _MISSING else bool(value)

    def float(self, param: str, default: float | None = None) -> float:
        value = self.get(param, _MISSING)
        if value is _MISSING:
            if default is None:
                return float(self[param])
            return default
        return float(value)

    def str(self, param: str, default: str = "") -> str:
        value = self.get(param, _MISSING)
        return default if value is _MISSING else str(value)

    def unsupported(self, detail: str) -> UnsupportedMILOp:
        return UnsupportedMILOp(self.op_type, self.op_name, detail)


def compute(x: Any) -> np.ndarray:
    """An input in its compute dtype: fp16 (and bool/int left alone) widened to fp32."""
    arr = np.asarray(x)
    return arr.astype(np.float32) if arr.dtype == np.float16 else arr


def fcompute(x: Any) -> np.ndarray:
    """An input as floating point for math: fp64 stays, everything else becomes fp32."""
    arr = np.asarray(x)
    return arr if arr.dtype == np.float64 else arr.astype(np.float32)


def axis_of(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis
