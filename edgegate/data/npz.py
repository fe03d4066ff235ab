"""User data from .npz archives: images (NCHW or NHWC, float or uint8) or token ids.

Every problem a user can fix (missing file, corrupt archive, wrong key, rank, dtype,
NaN) becomes a one-line BadInput naming the file and key; numpy errors never escape.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np
import torch

from edgegate.data.imagedata import ImageData
from edgegate.data.imaging import (
    check_channels,
    check_size,
    convert_channels,
    normalize,
    resize,
)
from edgegate.errors import BadInput, first_line

__all__ = ["IMAGE_KEYS", "LABEL_KEYS", "TOKEN_KEYS", "load_npz_images", "load_npz_tokens"]

IMAGE_KEYS: tuple[str, ...] = ("x", "images", "inputs", "arr_0")
LABEL_KEYS: tuple[str, ...] = ("y", "labels")
TOKEN_KEYS: tuple[str, ...] = ("tokens", "input_ids", "ids", "x", "inputs", "arr_0")


def _read(path: str | os.PathLike[str], keys: tuple[str, ...], what: str) -> dict[str, np.ndarray]:
    """Load the first of ``keys`` (and the label key when images) from an .npz archive."""
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise BadInput(f"data file not found: '{p}'")
    try:
        with open(p, "rb") as f:
            magic = f.read(6)
    except OSError as e:
        raise BadInput(f"cannot read data file '{p}' ({e.strerror or e})") from e
    if not magic.startswith(b"PK") and magic != b"\x93NUMPY":
        raise BadInput(f"'{p}' is not a valid .npz file (not a zip archive)")
    out: dict[str, np.ndarray] = {}
    try:
        loaded = np.load(p, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise BadInput(f"'{p}' is a .npy array, not an .npz archive (use numpy.savez)")
        with loaded as archive:
            present = list(archive.files)
            key = next((k for k in keys if k in present), None)
            if key is None:
                raise BadInput(
                    f"'{p}' has no {what} array: expected one of the keys "
                    f"{', '.join(keys)}; found {', '.join(present) or 'none'}"
                )
            out[key] = archive[key]
            if what == "image":
                label_key = next((k for k in LABEL_KEYS if k in present), None)
                if label_key is not None:
                    out[label_key] = archive[label_key]
    except BadInput:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        # pickled/object arrays, truncated zips, bad CRCs and random bytes all land here
        reason = first_line(e)
        raise BadInput(f"'{p}' is not a valid .npz file ({reason})") from e
    return out


def _first_nonfinite(arr: np.ndarray) -> tuple[int, ...] | None:
    bad = ~np.isfinite(arr)
    if not bad.any():
        return None
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), arr.shape))


def _to_nchw(arr: np.ndarray, where: str) -> np.ndarray:
    """Images as [N, C, H, W]: [N, H, W] gains a channel; NHWC is detected and transposed."""
    if arr.ndim == 3:
        return arr[:, None]
    if arr.ndim == 4:
        if arr.shape[1] in (1, 3):
            return arr
        if arr.shape[3] in (1, 3):
            return arr.transpose(0, 3, 1, 2)
        raise BadInput(f"{where} has shape {arr.shape}: expected NCHW or NHWC with 1 or 3 channels")
    raise BadInput(f"{where} has rank {arr.ndim}: expected images [N, H, W], NCHW or NHWC")


def load_npz_images(path: str | os.PathLike[str], size: int, channels: int) -> ImageData:
    """Images (and optional labels) from an .npz file, shaped [N, channels, size, size].

    uint8 arrays are raw pixels: scaled to [0, 1] and normalised like digits. Float arrays
    are taken as already preprocessed and are only resized and channel-converted.
    """
    check_size(size)
    check_channels(channels)
    p = os.fspath(path)
    arrays = _read(p, IMAGE_KEYS, "image")
    key = next(k for k in IMAGE_KEYS if k in arrays)
    arr = arrays[key]
    where = f"'{p}' key '{key}'"
    if arr.size == 0:
        raise BadInput(f"{where} is empty (shape {arr.shape})")
    if arr.dtype == np.uint8:
        x = torch.from_numpy(_to_nchw(arr, where).astype(np.float32) / 255.0)
        x = normalize(x)
    elif np.issubdtype(arr.dtype, np.floating):
        bad = _first_nonfinite(arr)
        if bad is not None:
            raise BadInput(f"{where} has a non-finite value ({arr[bad]}) at index {bad}")
        x = torch.from_numpy(np.ascontiguousarray(_to_nchw(arr, where), dtype=np.float32))
    else:
        raise BadInput(f"{where} has dtype {arr.dtype}: expected float or uint8 images")
    stored_channels = int(x.shape[1])
    x = resize(convert_channels(x, channels), size).contiguous()
    labels = None
    label_key = next((k for k in LABEL_KEYS if k in arrays), None)
    if label_key is not None:
        labels = _labels(arrays[label_key], len(x), f"'{p}' key '{label_key}'")
    return ImageData(images=x, labels=labels, name=f"npz:{p}", source_channels=stored_channels)


def _labels(arr: np.ndarray, n: int, where: str) -> torch.Tensor:
    if not np.issubdtype(arr.dtype, np.integer):
        raise BadInput(f"{where} has dtype {arr.dtype}: expected integer class labels")
    if arr.ndim != 1 or len(arr) != n:
        raise BadInput(f"{where} has shape {arr.shape}: expected [{n}], one label per image")
    if (arr < 0).any():
        i = int(np.argmax(arr < 0))
        raise BadInput(f"{where} has a negative label ({arr[i]}) at index {i}")
    return torch.from_numpy(arr.astype(np.int64))


def load_npz_tokens(path: str | os.PathLike[str], vocab_size: int | None = None) -> torch.Tensor:
    """Token ids from an .npz file as int64: a stream [T] or sequences [N, T]."""
    p = os.fspath(path)
    arrays = _read(p, TOKEN_KEYS, "token-id")
    key, arr = next(iter(arrays.items()))
    where = f"'{p}' key '{key}'"
    if not np.issubdtype(arr.dtype, np.integer):
        raise BadInput(f"{where} has dtype {arr.dtype}: expected integer token ids")
    if arr.ndim not in (1, 2):
        raise BadInput(f"{where} has rank {arr.ndim}: expected token ids [T] or [N, T]")
    if arr.size == 0:
        raise BadInput(f"{where} is empty (shape {arr.shape})")
    out_of_range = arr < 0
    if vocab_size is not None:
        out_of_range |= arr >= vocab_size
    if out_of_range.any():
        i = tuple(int(j) for j in np.unravel_index(int(np.argmax(out_of_range)), arr.shape))
        limit = f"[0, {vocab_size})" if vocab_size is not None else ">= 0"
        raise BadInput(f"{where} has token id {arr[i]} at index {i}: expected ids in {limit}")
    return torch.from_numpy(arr.astype(np.int64))
