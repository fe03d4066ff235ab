"""Staged output folders: all or nothing, and what arrives is usable."""

from __future__ import annotations

import os
import stat

import pytest

from edgegate.atomic import staged_directory


def test_staged_folders_keep_their_search_bit_and_files_do_not_gain_one(tmp_path):
    """A folder inside an output (a Core ML .mlpackage, a bundle's model/) must stay
    enterable for users other than its owner."""
    out = tmp_path / "out"
    with staged_directory(out) as stage:
        (stage / "pkg").mkdir()
        (stage / "pkg" / "weights.bin").write_bytes(b"w")
        (stage / "manifest.json").write_text("{}")
    umask = os.umask(0)
    os.umask(umask)
    folder_mode = stat.S_IMODE((out / "pkg").stat().st_mode)
    assert folder_mode == 0o777 & ~umask and folder_mode & stat.S_IXOTH
    assert stat.S_IMODE((out / "manifest.json").stat().st_mode) == 0o666 & ~umask


def test_a_failure_inside_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), staged_directory(out) as stage:
        (stage / "half.onnx").write_bytes(b"x")
        raise RuntimeError("export failed")
    assert list(tmp_path.iterdir()) == []
