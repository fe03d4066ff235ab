"""Up-front checks of where a command will write, so a bad path fails before any work.

A user who points ``-o`` at a file, or at a folder they cannot write, should hear so in one
line within a second, not after a two-minute export, and find nothing half-written.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from edgegate.errors import BadInput


def _nearest_existing(path: Path) -> Path:
    current = path.absolute()
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


def _probe_writable(folder: Path, what: str, path: Path) -> None:
    """Create and remove a file in ``folder``: the only test that also holds for root and for
    read-only or virtual file systems."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".edgegate-probe-", dir=folder)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise BadInput(
            f"{what} '{path}' cannot be written: '{folder}' refuses files ({reason})"
        ) from None
    os.close(fd)
    os.unlink(probe)


def _check_creatable(folder: Path, what: str, path: Path) -> None:
    """``folder`` exists and takes files, or its missing part can be made in one that does."""
    existing = _nearest_existing(folder)
    if not existing.is_dir():
        raise BadInput(f"{what} '{path}' cannot be created: '{existing}' is a file")
    _probe_writable(existing, what, path)


def check_output_dir(path: str | os.PathLike[str], what: str = "output folder") -> Path:
    """An output folder that exists as a folder, or can be created; never a file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise BadInput(f"{what} '{path}' is a file: give a folder path")
    _check_creatable(path, what, path)
    return path


def check_output_file(
    path: str | os.PathLike[str], what: str, suffixes: Iterable[str] = ()
) -> Path:
    """An output file whose folder exists or can be created; never a folder. Missing parent
    folders are made when the file is written (``make_parents``)."""
    path = Path(path)
    suffixes = tuple(suffixes)
    if suffixes and path.suffix.lower() not in suffixes:
        raise BadInput(f"{what} '{path}' should end in {' or '.join(suffixes)}")
    if path.is_dir():
        raise BadInput(f"{what} '{path}' is a folder: give a file path")
    _check_creatable(path.parent, what, path)
    return path


def make_parents(path: str | os.PathLike[str]) -> Path:
    """Create the missing folders above ``path`` (after ``check_output_file`` said they can be)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
