"""User images from a folder: class subfolders (labelled) or a flat folder (unlabelled).

Images are decoded with Pillow, converted to L or RGB, resized bilinearly and
normalised exactly like digits, so one model serves both sources.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

from edgegate.data.imagedata import ImageData
from edgegate.data.imaging import check_channels, check_size, normalize
from edgegate.errors import BadInput, first_line

__all__ = ["IMAGE_EXTENSIONS", "load_image_folder"]

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp")


def _visible(root: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(root) as it:
            return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as e:
        raise BadInput(f"cannot list image folder '{root}' ({e.strerror or e})") from e


def _image_files(root: str) -> list[str]:
    return [
        e.path
        for e in _visible(root)
        if e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS
    ]


def _load_one(path: str, size: int, mode: str) -> np.ndarray:
    """One image as float32 [C, size, size] in [0, 1]."""
    try:
        with Image.open(path) as img:
            img = img.convert(mode)
            if img.size != (size, size):
                img = img.resize((size, size), Image.Resampling.BILINEAR)
            arr = np.asarray(img, dtype=np.float32) / 255.0
    except Exception as e:  # any decode failure of a user file is the user's to fix
        reason = first_line(e)
        raise BadInput(f"cannot read image '{path}' ({reason})") from e
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def load_image_folder(root: str | os.PathLike[str], size: int, channels: int) -> ImageData:
    """All images under ``root``: ``root/<class>/*`` gives labels by sorted class name;
    images directly in ``root`` give unlabelled data. Mixing the two is an error."""
    check_size(size)
    check_channels(channels)
    r = os.fspath(root)
    if not os.path.isdir(r):
        raise BadInput(f"image folder not found: '{r}'")
    flat = _image_files(r)
    class_dirs = [e for e in _visible(r) if e.is_dir()]
    if flat and class_dirs:
        raise BadInput(
            f"image folder '{r}' has both images and subfolders: use either class "
            "subfolders or a flat folder of images"
        )
    mode = "L" if channels == 1 else "RGB"
    files: list[str]
    labels: list[int] | None = None
    classes: tuple[str, ...] | None = None
    if flat:
        files = flat
    else:
        files, labels = [], []
        for label, d in enumerate(class_dirs):
            found = _image_files(d.path)
            if not found:
                raise BadInput(
                    f"class folder '{d.path}' has no images ({', '.join(IMAGE_EXTENSIONS)})"
                )
            files += found
            labels += [label] * len(found)
        classes = tuple(d.name for d in class_dirs)
    if not files:
        raise BadInput(
            f"image folder '{r}' has no images ({', '.join(IMAGE_EXTENSIONS)}) "
            "and no class subfolders"
        )
    x = torch.from_numpy(np.stack([_load_one(f, size, mode) for f in files]))
    y = None if labels is None else torch.tensor(labels, dtype=torch.int64)
    return ImageData(images=normalize(x), labels=y, name=f"folder:{r}", classes=classes)
