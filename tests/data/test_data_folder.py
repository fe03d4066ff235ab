import numpy as np
import pytest
import torch
from PIL import Image

from edgegate.data import IMAGE_MEAN, IMAGE_STD, load_image_folder


def _png(path, value, size=(10, 6), mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "L":
        Image.new("L", size, color=value).save(path)
    else:
        Image.new("RGB", size, color=(value, value, value)).save(path)


def _level(v):
    return (v / 255.0 - IMAGE_MEAN) / IMAGE_STD


def test_class_subfolders(tmp_path):
    _png(tmp_path / "dog" / "a.png", 255)
    _png(tmp_path / "dog" / "b.JPG", 255, mode="RGB")
    _png(tmp_path / "cat" / "z.bmp", 0)
    (tmp_path / "cat" / "notes.txt").write_text("ignored")
    d = load_image_folder(tmp_path, size=8, channels=1)
    assert d.classes == ("cat", "dog") and d.num_classes == 2
    assert d.labels.tolist() == [0, 1, 1]
    assert d.images.shape == (3, 1, 8, 8) and d.images.dtype == torch.float32
    assert torch.allclose(d.images[0], torch.tensor(_level(0)))
    assert torch.allclose(d.images[1], torch.tensor(_level(255)), atol=1e-2)


def test_flat_folder_rgb(tmp_path):
    _png(tmp_path / "b.png", 0)
    _png(tmp_path / "a.jpeg", 128, mode="RGB")
    d = load_image_folder(tmp_path, size=5, channels=3)
    assert d.labels is None and d.classes is None
    assert d.images.shape == (2, 3, 5, 5)
    assert torch.allclose(d.images[1], torch.tensor(_level(0)))  # sorted by name
    assert torch.equal(d.images[0, 0], d.images[0, 2])


def test_deterministic_and_loader(tmp_path):
    for i in range(5):
        _png(tmp_path / f"{i}.png", 40 * i)
    a, b = load_image_folder(tmp_path, 4, 1), load_image_folder(tmp_path, 4, 1)
    assert torch.equal(a.images, b.images) and a.fingerprint() == b.fingerprint()
    assert [len(x[0]) for x in a.loader(batch_size=2)] == [2, 2, 1]


def test_empty_folder(bad_input, tmp_path):
    bad_input(load_image_folder, tmp_path, 8, 1, match="no images")


def test_folder_with_only_other_files(bad_input, tmp_path):
    (tmp_path / "readme.txt").write_text("hi")
    bad_input(load_image_folder, tmp_path, 8, 1, match="no images")


def test_empty_class_folder(bad_input, tmp_path):
    _png(tmp_path / "a" / "x.png", 1)
    (tmp_path / "b").mkdir()
    bad_input(load_image_folder, tmp_path, 8, 1, match="class folder")


def test_mixed_layout(bad_input, tmp_path):
    _png(tmp_path / "a" / "x.png", 1)
    _png(tmp_path / "y.png", 1)
    bad_input(load_image_folder, tmp_path, 8, 1, match="both images and subfolders")


@pytest.mark.parametrize("content", [b"", b"not an image at all", None])
def test_unreadable_image_named(bad_input, tmp_path, content):
    _png(tmp_path / "ok.png", 1)
    bad = tmp_path / "broken.png"
    if content is None:  # a truncated real PNG
        img = np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)
        Image.fromarray(img).save(bad)
        bad.write_bytes(bad.read_bytes()[:80])
    else:
        bad.write_bytes(content)
    msg = bad_input(load_image_folder, tmp_path, 8, 1, match="cannot read image")
    assert "broken.png" in msg


def test_missing_folder(bad_input, tmp_path):
    bad_input(load_image_folder, tmp_path / "nope", 8, 1, match="not found")
