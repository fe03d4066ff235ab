import numpy as np
import pytest
import torch

from edgegate.data import (
    DEFAULT_POSITIVE_CLASS,
    DIGITS_SPLIT_SIZES,
    IMAGE_MEAN,
    IMAGE_STD,
    SPLITS,
    binary_targets,
    digits,
    digits_indices,
)
from edgegate.errors import BadInput

# pinned: the split must never drift between releases
PINNED_TEST_HEAD = [2, 13, 20, 24, 28]


def test_split_sizes_fixed_and_disjoint():
    idx = {s: digits_indices(s) for s in SPLITS}
    assert {s: len(i) for s, i in idx.items()} == {"train": 1257, "calib": 180, "test": 360}
    assert {s: len(i) for s, i in idx.items()} == DIGITS_SPLIT_SIZES
    everything = np.concatenate(list(idx.values()))
    assert len(np.unique(everything)) == 1797


def test_split_is_deterministic_and_stratified():
    a = digits("test", size=8)
    b = digits("test", size=8)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    counts = torch.bincount(a.labels, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37
    assert digits_indices("test")[:5].tolist() == PINNED_TEST_HEAD


@pytest.mark.parametrize("size,channels", [(8, 1), (32, 1), (16, 3), (4, 3)])
def test_shapes(size, channels):
    d = digits("calib", size=size, channels=channels)
    assert d.images.shape == (180, channels, size, size)
    assert d.images.dtype == torch.float32 and d.labels.dtype == torch.int64
    assert len(d) == 180 and d.num_classes == 10
    if channels == 3:
        assert torch.equal(d.images[:, 0], d.images[:, 2])


def test_normalisation():
    d = digits("train", size=8)
    lo, hi = (0 - IMAGE_MEAN) / IMAGE_STD, (1 - IMAGE_MEAN) / IMAGE_STD
    assert d.images.min() >= lo - 1e-6 and d.images.max() <= hi + 1e-6
    assert abs(float(d.images.mean())) < 0.01
    assert abs(float(d.images.std()) - 1.0) < 0.01
    assert torch.isclose(d.images.min(), torch.tensor(lo))


def test_loader_batches_and_seeded_shuffle():
    d = digits("calib", size=8)
    batches = list(d.loader(batch_size=64))
    assert [len(b[0]) for b in batches] == [64, 64, 52]
    y1 = torch.cat([b[1] for b in d.loader(64, shuffle=True, seed=3)])
    y2 = torch.cat([b[1] for b in d.loader(64, shuffle=True, seed=3)])
    assert torch.equal(y1, y2) and not torch.equal(y1, d.labels)


def test_binary_targets(bad_input):
    labels = torch.tensor([0, 3, 0, 9])
    assert binary_targets(labels).tolist() == [1.0, 0.0, 1.0, 0.0]
    assert binary_targets(labels, 3).dtype == torch.float32
    assert DEFAULT_POSITIVE_CLASS == 0
    bad_input(binary_targets, labels, -1)
    bad_input(binary_targets, labels.float(), 0)


def test_bad_arguments(bad_input):
    bad_input(digits, "val", match="unknown split 'val'")
    bad_input(digits, "train", size=0)
    bad_input(digits, "train", channels=2)
    with pytest.raises(BadInput):
        digits_indices("validation")
