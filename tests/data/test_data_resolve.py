import numpy as np
import pytest
import torch
from PIL import Image

from edgegate.data import resolve_image_data, resolve_text_data, stdlib_text


@pytest.mark.parametrize("source", [None, "digits"])
def test_builtin_digits(source):
    d = resolve_image_data(source, "calib", size=16, channels=3)
    assert d.name == "digits/calib" and d.images.shape == (180, 3, 16, 16)


def test_npz_and_folder(tmp_path):
    with open(tmp_path / "d.NPZ", "wb") as f:  # a file handle keeps the upper-case suffix
        np.savez(f, x=np.zeros((2, 4, 4, 1), np.uint8), y=np.array([0, 1]))
    d = resolve_image_data(str(tmp_path / "d.NPZ"), "test", size=4, channels=1)
    assert d.images.shape == (2, 1, 4, 4) and d.labels.tolist() == [0, 1]
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.new("RGB", (3, 3)).save(folder / "a.png")
    d = resolve_image_data(folder, "train", size=4, channels=3)
    assert d.images.shape == (1, 3, 4, 4)


def test_unknown_image_source(bad_input, tmp_path):
    msg = bad_input(resolve_image_data, "mnist", "train", 8, 1)
    assert msg == ("unknown data source 'mnist': expected 'digits', a .npz file or an image folder")
    (tmp_path / "a.txt").write_text("x")
    bad_input(resolve_image_data, str(tmp_path / "a.txt"), "train", 8, 1, match="unknown data")
    bad_input(resolve_image_data, str(tmp_path / "gone.npz"), "train", 8, 1, match="not found")
    bad_input(resolve_image_data, "digits", "valid", 8, 1, match="unknown split")


@pytest.mark.parametrize("source", [None, "stdlib"])
def test_builtin_text(source):
    assert torch.equal(resolve_text_data(source, "test"), stdlib_text("test"))


def test_text_file_and_npz(tmp_path):
    (tmp_path / "c.txt").write_bytes(b"hello\n")
    t = resolve_text_data(str(tmp_path / "c.txt"), "calib")
    assert t.dtype == torch.uint8 and bytes(t.tolist()) == b"hello\n"
    np.savez(tmp_path / "t.npz", input_ids=np.array([3, 1, 2]))
    t = resolve_text_data(tmp_path / "t.npz", "train", vocab_size=4)
    assert t.dtype == torch.int64 and t.tolist() == [3, 1, 2]


def test_bad_text_sources(bad_input, tmp_path):
    bad_input(resolve_text_data, "wikitext", "train", match="unknown text source 'wikitext'")
    bad_input(resolve_text_data, str(tmp_path), "train", match="unknown text source")
    (tmp_path / "e.txt").write_bytes(b"")
    bad_input(resolve_text_data, str(tmp_path / "e.txt"), "train", match="is empty")
    np.savez(tmp_path / "t.npz", tokens=np.array([0, 9]))
    bad_input(resolve_text_data, str(tmp_path / "t.npz"), "train", vocab_size=4, match="9")
