"""Built-in byte-level text corpus: a fixed list of CPython stdlib sources, no download.

The files are pure-Python modules that exist as plain files in every CPython 3.10-3.13
install. Their bytes differ a little between Python versions, so the corpus is fixed per
interpreter, not across them; the split fractions and file order never change.
"""

from __future__ import annotations

import os
import sysconfig
from functools import lru_cache

import torch

from edgegate.data.splits import check_split
from edgegate.errors import BadInput

__all__ = [
    "STDLIB_FILES",
    "TEXT_SPLIT_FRACTIONS",
    "VOCAB_SIZE",
    "stdlib_corpus",
    "stdlib_text",
    "text_windows",
]

VOCAB_SIZE = 256  # byte-level

# Order matters: the corpus is these files concatenated in this order.
STDLIB_FILES: tuple[str, ...] = (
    "argparse.py",
    "ast.py",
    "base64.py",
    "bisect.py",
    "calendar.py",
    "codecs.py",
    "collections/__init__.py",
    "configparser.py",
    "contextlib.py",
    "copy.py",
    "csv.py",
    "dataclasses.py",
    "difflib.py",
    "enum.py",
    "fractions.py",
    "functools.py",
    "gettext.py",
    "heapq.py",
    "inspect.py",
    "ipaddress.py",
    "json/decoder.py",
    "json/encoder.py",
    "logging/__init__.py",
    "pickle.py",
    "pprint.py",
    "queue.py",
    "random.py",
    "shlex.py",
    "shutil.py",
    "statistics.py",
    "string.py",
    "tarfile.py",
    "textwrap.py",
    "threading.py",
    "tokenize.py",
    "traceback.py",
    "typing.py",
    "uuid.py",
    "weakref.py",
)

# Contiguous byte ranges, in this order: train is the first 90%, calib the next 5%.
TEXT_SPLIT_FRACTIONS: dict[str, float] = {"train": 0.90, "calib": 0.05, "test": 0.05}


@lru_cache(maxsize=1)
def stdlib_corpus() -> bytes:
    """The whole corpus: the listed stdlib files' bytes, concatenated, read once."""
    root = sysconfig.get_paths()["stdlib"]
    chunks = []
    for rel in STDLIB_FILES:
        path = os.path.join(root, *rel.split("/"))
        try:
            with open(path, "rb") as f:
                chunks.append(f.read())
        except OSError as e:
            raise BadInput(
                f"built-in text corpus: stdlib file '{path}' cannot be read "
                f"({e.strerror or type(e).__name__})"
            ) from e
    return b"".join(chunks)


def _bounds(total: int) -> dict[str, tuple[int, int]]:
    a = int(total * TEXT_SPLIT_FRACTIONS["train"])
    b = int(total * (TEXT_SPLIT_FRACTIONS["train"] + TEXT_SPLIT_FRACTIONS["calib"]))
    return {"train": (0, a), "calib": (a, b), "test": (b, total)}


@lru_cache(maxsize=len(TEXT_SPLIT_FRACTIONS))
def _split_tensor(split: str) -> torch.Tensor:
    data = stdlib_corpus()
    start, stop = _bounds(len(data))[split]
    return torch.frombuffer(bytearray(data[start:stop]), dtype=torch.uint8)


def stdlib_text(split: str) -> torch.Tensor:
    """One split of the corpus as a 1-D uint8 tensor (a fresh copy, safe to modify)."""
    return _split_tensor(check_split(split)).clone()


def text_windows(data: torch.Tensor, seq_len: int, stride: int | None = None) -> torch.Tensor:
    """Cut token streams into int64 windows [N, seq_len + 1]: inputs ``w[:, :-1]``, targets
    ``w[:, 1:]``. Windows start every ``stride`` tokens (default ``seq_len``, so each target
    is predicted once); a 2-D ``data`` [B, T] is windowed row by row, rows kept apart."""
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
        raise BadInput(f"seq_len must be a positive integer, got {seq_len!r}")
    stride = seq_len if stride is None else stride
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise BadInput(f"stride must be a positive integer, got {stride!r}")
    if not isinstance(data, torch.Tensor) or data.ndim not in (1, 2) or data.is_floating_point():
        raise BadInput("text data must be a 1-D or 2-D integer tensor of token ids")
    rows = data.to(torch.int64).reshape(-1, data.shape[-1])
    width = seq_len + 1
    if rows.shape[1] < width:
        raise BadInput(
            f"text data has {rows.shape[1]} tokens per sequence, fewer than seq_len + 1 = {width}"
        )
    windows = rows.unfold(1, width, stride)  # [B, N, width]
    return windows.reshape(-1, width).contiguous()
