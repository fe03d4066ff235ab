"""One Runner interface for every backend, so validation never needs to know which it drives.

Modelled on Polygraphy's runners: a runner is a context manager that loads its model on
enter and frees it on exit, describes its inputs, and maps a feed of named arrays to a
dict of named outputs in a fixed order, timing each call.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

Dim = int | str | None  # an int is fixed; a str (symbolic name) or None is dynamic


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape and numpy dtype name of one model input or output.

    ``dtype`` is "" when the backend cannot say (an un-annotated torch module).
    """

    name: str
    shape: tuple[Dim, ...]
    dtype: str

    @property
    def rank(self) -> int:
        return len(self.shape)

    def is_dynamic(self, axis: int) -> bool:
        return not isinstance(self.shape[axis], int)


class Runner(ABC):
    """Context manager: activate on enter, release on exit; ``run`` maps names to arrays.

    ``run`` also works outside a ``with`` block: backends load lazily, so a quick script
    need not manage the context. ``last_latency_ms`` is the wall time of the last ``run``.
    """

    name = "runner"
    threads: int | None = None

    def __init__(self) -> None:
        self.last_latency_ms = float("nan")
        self.is_active = False

    def __enter__(self) -> Runner:
        self.activate()
        self.is_active = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.deactivate()
        self.is_active = False

    def activate(self) -> None:  # noqa: B027 - optional hook
        """Load the model; backends that need no set-up keep this no-op."""

    def deactivate(self) -> None:  # noqa: B027 - optional hook
        """Free the model."""

    @abstractmethod
    def input_specs(self) -> list[TensorSpec]: ...

    @abstractmethod
    def output_names(self) -> list[str]: ...

    @abstractmethod
    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once; outputs come in ``output_names()`` order; the call's time is recorded."""
        start = time.perf_counter()
        out = self._infer(feed)
        self.last_latency_ms = (time.perf_counter() - start) * 1e3
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, active={self.is_active})"
