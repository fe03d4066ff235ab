"""Built-in datasets (digits, stdlib text; no download) and user data loaders."""

from __future__ import annotations

from edgegate.data.digits import (
    DEFAULT_POSITIVE_CLASS,
    DIGITS_SPLIT_SIZES,
    NUM_DIGITS_CLASSES,
    binary_targets,
    digits,
    digits_indices,
)
from edgegate.data.folder import IMAGE_EXTENSIONS, load_image_folder
from edgegate.data.imagedata import ImageData
from edgegate.data.imaging import IMAGE_MEAN, IMAGE_STD
from edgegate.data.npz import load_npz_images, load_npz_tokens
from edgegate.data.resolve import resolve_image_data, resolve_text_data
from edgegate.data.splits import SPLITS
from edgegate.data.text import (
    STDLIB_FILES,
    TEXT_SPLIT_FRACTIONS,
    VOCAB_SIZE,
    stdlib_corpus,
    stdlib_text,
    text_windows,
)

__all__ = [
    "DEFAULT_POSITIVE_CLASS",
    "DIGITS_SPLIT_SIZES",
    "IMAGE_EXTENSIONS",
    "IMAGE_MEAN",
    "IMAGE_STD",
    "NUM_DIGITS_CLASSES",
    "SPLITS",
    "STDLIB_FILES",
    "TEXT_SPLIT_FRACTIONS",
    "VOCAB_SIZE",
    "ImageData",
    "binary_targets",
    "digits",
    "digits_indices",
    "load_image_folder",
    "load_npz_images",
    "load_npz_tokens",
    "resolve_image_data",
    "resolve_text_data",
    "stdlib_corpus",
    "stdlib_text",
    "text_windows",
]
