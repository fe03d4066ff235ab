"""Progress on stderr: rich bars on a terminal, plain timestamped lines in logs and CI.

rich draws nothing until it stops when stderr is not a terminal, so a CI log would show a
40-second export as silence. There, a phase that runs past ``QUIET_S`` gets a line, another
every ``HEARTBEAT_S`` (with its count when it has one), and a last line with its duration.
Phases that end sooner print nothing, so quick commands and one-line errors stay clean.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.progress import (
    Progress as RichProgress,
)

from edgegate.progress import Progress

QUIET_S = 2.0
HEARTBEAT_S = 10.0


@dataclass
class _Phase:
    name: str
    total: int | None
    started: float = field(default_factory=time.monotonic)
    done: int = 0
    info: str = ""
    last_line: float | None = None  # when a plain line was last printed for it
    scoped: bool = False  # opened by start() (``phase``): it ends with finish(), not its count


class ConsoleProgress(Progress):
    """Draws phase events on ``console`` (stderr), as bars or as plain periodic lines."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live = console.is_terminal
        self._lock = threading.Lock()
        self._phases: dict[str, _Phase] = {}
        self._bars: RichProgress | None = None
        self._tasks: dict[str, TaskID] = {}
        self._ticker: threading.Thread | None = None
        self._stop = threading.Event()

    # --- events ---------------------------------------------------------------------------

    def start(self, phase: str, total: int | None = None) -> None:
        with self._lock:
            self._open(phase, total, scoped=True)

    def step(self, phase: str, done: int, total: int | None = None, info: str = "") -> None:
        with self._lock:
            state = self._phases.get(phase) or self._open(phase, total, scoped=False)
            state.done, state.info = done, info
            if total is not None:
                state.total = total
            if self.live and self._bars is not None:
                self._bars.update(self._tasks[phase], completed=done, total=state.total, info=info)
        if state.total is not None and done >= state.total and not state.scoped:
            self.finish(phase)  # a phase reported only by its steps ends with its last step

    def _open(self, phase: str, total: int | None, scoped: bool) -> _Phase:
        state = self._phases[phase] = _Phase(phase, total, scoped=scoped)
        if self.live:
            self._bar_start(phase, total)
        else:
            self._ensure_ticker()
        return state

    def finish(self, phase: str) -> None:
        with self._lock:
            state = self._phases.pop(phase, None)
            if state is None:
                return
            if self.live and self._bars is not None:
                self._bars.remove_task(self._tasks.pop(phase))
            elif state.last_line is not None:
                elapsed = time.monotonic() - state.started
                self._print(f"{phase}: done in {elapsed:.1f} s")

    def close(self) -> None:
        """Stop drawing (also after an error); finished output stays as it is."""
        self._stop.set()
        with self._lock:
            if self._bars is not None:
                self._bars.stop()
                self._bars = None
            self._phases.clear()

    # --- terminal -------------------------------------------------------------------------

    def _bar_start(self, phase: str, total: int | None) -> None:
        if self._bars is None:
            self._bars = RichProgress(
                SpinnerColumn(),
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[info]}"),
                console=self.console,
                transient=True,
            )
            self._bars.start()
        self._tasks[phase] = self._bars.add_task(phase, total=total, info="")

    # --- plain lines ----------------------------------------------------------------------

    def _ensure_ticker(self) -> None:
        if self._ticker is None:
            self._ticker = threading.Thread(
                target=self._tick, name="edgegate-progress", daemon=True
            )
            self._ticker.start()

    def _tick(self) -> None:
        while not self._stop.wait(0.5):
            now = time.monotonic()
            with self._lock:
                for state in self._phases.values():
                    since = now - (
                        state.last_line if state.last_line is not None else state.started
                    )
                    due = QUIET_S if state.last_line is None else HEARTBEAT_S
                    if since >= due:
                        self._print(self._status(state, now))
                        state.last_line = now

    @staticmethod
    def _status(state: _Phase, now: float) -> str:
        count = f" {state.done}/{state.total}" if state.total else ""
        info = f" {state.info}" if state.info else ""
        return f"{state.name}:{count}{info} ({now - state.started:.0f} s)"

    def _print(self, line: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        self.console.print(f"[{stamp}] {line}", highlight=False, markup=False, soft_wrap=True)
