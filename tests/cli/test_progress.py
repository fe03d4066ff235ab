"""Progress on stderr: plain timestamped lines when stderr is not a terminal (CI logs)."""

from __future__ import annotations

import io
import time

from rich.console import Console

from edgegate.cli import progress as progress_module
from edgegate.cli.progress import ConsoleProgress


def _plain_console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=False, width=200), buffer


def test_short_phases_print_nothing():
    console, buffer = _plain_console()
    progress = ConsoleProgress(console)
    with progress.phase("quick"):
        pass
    progress.close()
    assert buffer.getvalue() == ""


def test_long_phases_print_periodic_lines_and_a_duration(monkeypatch):
    monkeypatch.setattr(progress_module, "QUIET_S", 0.2)
    monkeypatch.setattr(progress_module, "HEARTBEAT_S", 0.4)
    console, buffer = _plain_console()
    progress = ConsoleProgress(console)
    with progress.phase("export model.onnx"):
        time.sleep(1.5)
    with progress.phase("calibrate", total=10) as step:
        for i in range(10):
            step(i + 1)
            time.sleep(0.1)
    progress.close()
    lines = buffer.getvalue().splitlines()
    export = [line for line in lines if "export model.onnx" in line]
    assert len(export) >= 3, lines  # first line after QUIET_S, heartbeats, then the duration
    assert export[-1].endswith("s") and "done in" in export[-1]
    assert any("calibrate:" in line and "/10" in line for line in lines), lines
    assert all(line.startswith("[") for line in lines)  # timestamped


def test_training_steps_carry_their_loss(monkeypatch):
    monkeypatch.setattr(progress_module, "QUIET_S", 0.1)
    console, buffer = _plain_console()
    progress = ConsoleProgress(console)
    progress.step("training", 3, 10, "loss 0.1234")
    time.sleep(0.8)
    progress.finish("training")
    progress.close()
    assert "training: 3/10 loss 0.1234" in buffer.getvalue()


def test_a_phase_reported_only_by_steps_ends_with_its_last_step(monkeypatch):
    """Calibration reports (phase, done, total) and nothing else: done == total ends it."""
    monkeypatch.setattr(progress_module, "QUIET_S", 0.1)
    console, buffer = _plain_console()
    progress = ConsoleProgress(console)
    progress("calibrate", 1, 2)
    time.sleep(0.7)
    progress("calibrate", 2, 2)
    time.sleep(0.7)  # a phase still open would print a heartbeat here
    progress.close()
    lines = buffer.getvalue().splitlines()
    assert lines[-1].endswith("s") and "calibrate: done in" in lines[-1], lines
