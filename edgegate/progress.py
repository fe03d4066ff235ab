"""Progress of long phases, reported by the library and drawn by whoever called it.

The library reports; it never prints. Every long-running function takes a ``Progress`` and
calls ``phase`` around work it cannot count (an ONNX export) and ``step`` inside work it can
(calibration batches, benchmark runs). The base class does nothing, so library users and
tests pay nothing; the CLI passes one that draws rich bars on a terminal and plain lines in
CI logs. ``Progress`` instances are also ``(phase, done, total)`` callables, the hook type the
lower layers (calibration, training) take.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

ProgressHook = Callable[[str, int, int], None]  # (phase, done, total)


class Progress:
    """Receives phase events; this base class ignores them all."""

    def start(self, phase: str, total: int | None = None) -> None:
        """A phase begins; ``total`` steps if countable, else None."""

    def step(self, phase: str, done: int, total: int | None = None, info: str = "") -> None:
        """``done`` of ``total`` steps of ``phase`` are complete; ``info`` is a short status."""

    def finish(self, phase: str) -> None:
        """A phase ended (successfully or not)."""

    def __call__(self, phase: str, done: int, total: int) -> None:
        self.step(phase, done, total)

    @contextlib.contextmanager
    def phase(self, name: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
        """``with progress.phase("export model.onnx"):`` around one long piece of work; the
        yielded callable reports steps done when the work is countable."""
        self.start(name, total)
        try:
            yield lambda done: self.step(name, done, total)
        finally:
            self.finish(name)


SILENT = Progress()
