"""One Runner interface for every backend, so validation never needs to know which it drives."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from edgegate.runtime.batching import join_outputs, split_feed


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int | str | None, ...]  # str/None = dynamic
    dtype: str  # numpy dtype name


class Runner(ABC):
    """Context manager: activate on enter, release on exit; ``run`` maps names to arrays."""

    name = "runner"
    # Set before activation for a model called at intervals (an always-on stage): a runtime
    # whose worker threads spin after each run, waiting for the next, lets them sleep instead.
    # Spinning buys back-to-back latency; between a stream's calls it only burns a core, and
    # steals it from whatever else runs there.
    idle_between_runs = False

    def __init__(self) -> None:
        self.last_latency_ms = float("nan")
        self._active = False
        # The largest batch the model declares (its manifest's range, or a batch fixed in the
        # file): a feed with more rows runs in slices of that many, and the outputs are joined
        self.batch_limit: int | None = None

    def __enter__(self) -> Runner:
        self.activate()
        self._active = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.deactivate()
        self._active = False

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
        """Run once (in slices of ``batch_limit`` rows, when the feed has more) and record the
        wall time of the call in ``last_latency_ms``."""
        start = time.perf_counter()
        pieces = [self._infer(piece) for piece in split_feed(feed, self.batch_limit)]
        out = join_outputs(pieces)
        self.last_latency_ms = (time.perf_counter() - start) * 1e3
        return out
