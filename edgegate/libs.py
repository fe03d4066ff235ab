"""Optional libraries, imported quietly and named with their install command when missing.

ExecuTorch and torchao log at import time: torchao warns about each CUDA extension a CPU
wheel cannot load, torch's pytree warns about deprecated registrations, and ExecuTorch's
pybindings warn that the API is experimental. None of it concerns an edgegate user, and on
stderr it would bury the one-line messages of the CLI, so those imports run with these
loggers and warnings held down. A missing library is BackendUnavailable (exit 3).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator
from types import ModuleType

from edgegate.errors import BackendUnavailable

EXECUTORCH_INSTALL = "pip install 'edgegate-nn[executorch]'"
# loggers that speak during the imports of executorch and torchao, not during their use
_NOISY_LOGGERS = ("torchao", "torch.utils._pytree", "torch.export", "executorch")


@contextlib.contextmanager
def quiet_imports() -> Iterator[None]:
    """Hold down the import-time warnings of the optional libraries (module docstring)."""
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def import_optional(name: str, install: str = EXECUTORCH_INSTALL) -> ModuleType:
    """``import name`` quietly; BackendUnavailable naming ``install`` when it is missing."""
    with quiet_imports():
        try:
            return importlib.import_module(name)
        except ImportError as exc:
            missing = getattr(exc, "name", None) or name
            raise BackendUnavailable(
                f"{missing} is not installed (needed for {name}): {install}"
            ) from None


class CapturedStderr:
    """What native code logged inside ``captured_stderr``."""

    def __init__(self) -> None:
        self.text = ""

    def last_line(self) -> str:
        """The last line logged, without the runtime's ``[file.cpp:123]`` prefix."""
        lines = [line.strip() for line in self.text.splitlines() if line.strip()]
        return re.sub(r"^\[[\w.]+:\d+\]\s*", "", lines[-1]) if lines else ""


@contextlib.contextmanager
def captured_stderr() -> Iterator[CapturedStderr]:
    """Catch what C++ code (ExecuTorch's runtime logs) writes to fd 2, or through Python's
    ``sys.stderr``, instead of letting it reach the terminal.

    The runtime logs cpuinfo probes when its thread pool starts and a line per failure; a
    failure becomes edgegate's one line (with the log's last line as the reason), not a
    stack of native log lines on stderr.
    """
    captured = CapturedStderr()
    sys.stderr.flush()
    saved, python_stderr = os.dup(2), sys.stderr
    routed = io.StringIO()  # ExecuTorch's pybindings route C++ logs to Python's sys.stderr
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        sys.stderr = routed
        try:
            yield captured
        finally:
            sys.stderr = python_stderr
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.text = sink.read().decode(errors="replace") + routed.getvalue()
