import os
import sysconfig

import pytest
import torch

import edgegate.data.text as text_mod
from edgegate.data import (
    SPLITS,
    STDLIB_FILES,
    TEXT_SPLIT_FRACTIONS,
    stdlib_corpus,
    stdlib_text,
    text_windows,
)


def test_every_listed_file_exists():
    root = sysconfig.get_paths()["stdlib"]
    assert 20 <= len(STDLIB_FILES) <= 40 and len(set(STDLIB_FILES)) == len(STDLIB_FILES)
    for rel in STDLIB_FILES:
        assert os.path.isfile(os.path.join(root, rel)), rel


def test_corpus_size_and_split_sizes():
    total = len(stdlib_corpus())
    assert 1_000_000 <= total <= 3_000_000
    sizes = {s: len(stdlib_text(s)) for s in SPLITS}
    assert sum(sizes.values()) == total
    assert sizes["train"] == int(total * TEXT_SPLIT_FRACTIONS["train"])
    for s in ("calib", "test"):
        assert abs(sizes[s] - total * 0.05) <= 1


def test_splits_are_contiguous_in_order_and_deterministic():
    corpus = stdlib_corpus()
    joined = b"".join(bytes(stdlib_text(s).tolist()) for s in SPLITS)
    assert joined == corpus
    a, b = stdlib_text("calib"), stdlib_text("calib")
    assert a.dtype == torch.uint8 and a.ndim == 1 and torch.equal(a, b)
    first = int(b[0])
    a[0] = (first + 1) % 256  # callers get a copy; the cache stays intact
    assert int(stdlib_text("calib")[0]) == first


def test_text_windows_shapes_and_shift():
    data = torch.arange(100, dtype=torch.uint8)
    w = text_windows(data, seq_len=16)
    assert w.dtype == torch.int64 and w.shape == (6, 17)
    assert torch.equal(w[:, 1:], w[:, :-1] + 1)
    assert w[1, 0] == 16  # default stride = seq_len: each target predicted once
    w2 = text_windows(data, seq_len=16, stride=4)
    assert w2.shape == ((100 - 17) // 4 + 1, 17) and w2[1, 0] == 4
    assert torch.equal(text_windows(data, 16), w)


def test_text_windows_rows_kept_apart():
    rows = torch.arange(40).reshape(2, 20)
    w = text_windows(rows, seq_len=9)
    assert w.shape == (4, 10) and w[2, 0] == 20


def test_text_windows_on_corpus():
    w = text_windows(stdlib_text("test"), seq_len=256)
    assert w.shape[1] == 257 and int(w.max()) < 256


def test_text_windows_bad_args(bad_input):
    data = torch.arange(10)
    bad_input(text_windows, data, 10, match="fewer than")
    bad_input(text_windows, data, 0)
    bad_input(text_windows, data, 4, stride=0)
    bad_input(text_windows, data.float(), 4)
    bad_input(text_windows, data.reshape(1, 1, 10), 4)


def test_missing_stdlib_file_named(bad_input, monkeypatch):
    monkeypatch.setattr(text_mod, "STDLIB_FILES", ("argparse.py", "no_such_module_xyz.py"))
    text_mod.stdlib_corpus.cache_clear()
    try:
        bad_input(text_mod.stdlib_corpus, match="no_such_module_xyz.py")
    finally:
        text_mod.stdlib_corpus.cache_clear()


@pytest.mark.parametrize("split", ["val", "Train"])
def test_unknown_split(bad_input, split):
    bad_input(stdlib_text, split, match="unknown split")
