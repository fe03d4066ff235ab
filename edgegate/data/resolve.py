"""Turn the CLI's ``--data`` string into tensors: one place decides what a source means.

Built-in sources honour ``split``. User files and folders are used whole for any split:
pass a different file for calibration and for evaluation.
"""

from __future__ import annotations

import os

import torch

from edgegate.data.digits import digits
from edgegate.data.folder import load_image_folder
from edgegate.data.imagedata import ImageData
from edgegate.data.npz import load_npz_images, load_npz_tokens
from edgegate.data.splits import check_split
from edgegate.data.text import stdlib_text
from edgegate.errors import BadInput

__all__ = ["resolve_image_data", "resolve_text_data"]


def _is_npz(source: str) -> bool:
    return source.lower().endswith(".npz")


def resolve_image_data(
    source: str | os.PathLike[str] | None, split: str, size: int, channels: int
) -> ImageData:
    """None/'digits' -> built-in digits; '*.npz' -> npz images; a directory -> image folder."""
    check_split(split)
    if source is None or source == "digits":
        return digits(split, size=size, channels=channels)
    s = os.fspath(source)
    if _is_npz(s):
        return load_npz_images(s, size=size, channels=channels)
    if os.path.isdir(s):
        return load_image_folder(s, size=size, channels=channels)
    raise BadInput(f"unknown data source '{s}': expected 'digits', a .npz file or an image folder")


def _read_text_file(path: str) -> torch.Tensor:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise BadInput(f"cannot read text file '{path}' ({e.strerror or e})") from e
    if not data:
        raise BadInput(f"text file '{path}' is empty")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def resolve_text_data(
    source: str | os.PathLike[str] | None, split: str, vocab_size: int | None = None
) -> torch.Tensor:
    """None/'stdlib' -> built-in corpus (uint8); '*.npz' -> token ids (int64, [T] or [N, T]);
    any other existing file -> its bytes (uint8). ``vocab_size`` bounds npz token ids."""
    check_split(split)
    if source is None or source == "stdlib":
        return stdlib_text(split)
    s = os.fspath(source)
    if _is_npz(s):
        return load_npz_tokens(s, vocab_size=vocab_size)
    if os.path.isfile(s):
        return _read_text_file(s)
    raise BadInput(
        f"unknown text source '{s}': expected 'stdlib', a .npz file of token ids or a text file"
    )
