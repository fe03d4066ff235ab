"""Atomic file writes: a failed stage must never leave a half-written artifact behind."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO]:
    """Write to a temporary file beside ``path``, then rename it into place.

    The file gets the usual permissions (0666 minus the umask), not mkstemp's 0600.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def staged_directory(out_dir: str | os.PathLike[str]) -> Iterator[Path]:
    """Build a stage's files in a hidden sibling folder, then move them into ``out_dir``.

    A failure anywhere inside the block removes the staging folder, so ``out_dir`` only
    ever holds complete artifacts (each file arrives by an atomic rename).
    """
    out_dir = Path(out_dir)
    parent = out_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".staging", dir=parent))
    try:
        yield staging
        out_dir.mkdir(exist_ok=True)
        for item in sorted(staging.iterdir()):
            mode = 0o777 if item.is_dir() else 0o666  # a folder (a .mlpackage) needs its x bit
            os.chmod(item, mode & ~_umask())
            os.replace(item, out_dir / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def save_png(fig: Any, path: str | os.PathLike[str]) -> Path:
    """Write a matplotlib figure as PNG atomically, then close it (figures pile up otherwise)."""
    import matplotlib.pyplot as plt

    path = Path(path)
    with atomic_write(path) as fh:
        fig.savefig(fh, format="png", dpi=100)
    plt.close(fig)
    return path
