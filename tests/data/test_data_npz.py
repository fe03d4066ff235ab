import numpy as np
import pytest
import torch

from edgegate.data import IMAGE_MEAN, IMAGE_STD, load_npz_images, load_npz_tokens


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_nchw_float_round_trip(tmp_path, rng):
    x = rng.standard_normal((5, 3, 8, 8)).astype(np.float32)
    y = np.arange(5)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    d = load_npz_images(tmp_path / "d.npz", size=8, channels=3)
    assert torch.equal(d.images, torch.from_numpy(x))  # float = preprocessed, untouched
    assert d.labels.tolist() == [0, 1, 2, 3, 4] and d.labels.dtype == torch.int64


def test_nhwc_detected(tmp_path, rng):
    x = rng.standard_normal((4, 8, 8, 3)).astype(np.float64)
    np.savez(tmp_path / "d.npz", images=x)
    d = load_npz_images(tmp_path / "d.npz", size=8, channels=3)
    assert d.labels is None and d.images.dtype == torch.float32
    assert torch.allclose(d.images, torch.from_numpy(x.transpose(0, 3, 1, 2)).float())


def test_uint8_scaled_normalised_resized_and_grey(tmp_path):
    x = np.full((2, 6, 6), 255, dtype=np.uint8)
    x[1] = 0
    np.savez(tmp_path / "d.npz", inputs=x, labels=np.array([1, 0]))
    d = load_npz_images(tmp_path / "d.npz", size=12, channels=3)
    assert d.images.shape == (2, 3, 12, 12)
    assert torch.allclose(d.images[0], torch.tensor((1 - IMAGE_MEAN) / IMAGE_STD))
    assert torch.allclose(d.images[1], torch.tensor(-IMAGE_MEAN / IMAGE_STD))


def test_rgb_to_grey(tmp_path):
    x = np.ones((1, 3, 4, 4), dtype=np.float32)
    np.savez(tmp_path / "d.npz", x=x)
    d = load_npz_images(tmp_path / "d.npz", size=4, channels=1)
    assert d.images.shape == (1, 1, 4, 4) and torch.allclose(d.images, torch.ones(1))


def test_tokens_round_trip(tmp_path):
    ids = np.arange(50, dtype=np.int32).reshape(5, 10)
    np.savez(tmp_path / "t.npz", tokens=ids)
    t = load_npz_tokens(tmp_path / "t.npz", vocab_size=50)
    assert t.dtype == torch.int64 and t.tolist() == ids.tolist()


def test_missing_file(bad_input, tmp_path):
    bad_input(load_npz_images, tmp_path / "nope.npz", 8, 1, match="not found")


def test_corrupt_npz(bad_input, tmp_path, rng):
    path = tmp_path / "junk.npz"
    path.write_bytes(rng.bytes(2048))
    msg = bad_input(load_npz_images, path, 8, 1, match="not a valid .npz")
    assert "junk.npz" in msg
    bad_input(load_npz_tokens, path, match="junk.npz")


def test_truncated_npz(bad_input, tmp_path, rng):
    np.savez(tmp_path / "d.npz", x=rng.standard_normal((8, 1, 8, 8)))
    data = (tmp_path / "d.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    bad_input(load_npz_images, tmp_path / "cut.npz", 8, 1, match="cut.npz")


def test_npy_not_npz(bad_input, tmp_path):
    with open(tmp_path / "a.npz", "wb") as f:
        np.save(f, np.zeros((1, 1, 2, 2)))
    bad_input(load_npz_images, tmp_path / "a.npz", 2, 1, match="not an .npz archive")


def test_no_usable_key(bad_input, tmp_path):
    np.savez(tmp_path / "d.npz", foo=np.zeros((2, 1, 4, 4)))
    msg = bad_input(load_npz_images, tmp_path / "d.npz", 4, 1, match="no image array")
    assert "d.npz" in msg and "found foo" in msg


def test_nan_names_file_key_and_index(bad_input, tmp_path):
    x = np.zeros((3, 1, 4, 4), dtype=np.float32)
    x[2, 0, 1, 3] = np.nan
    np.savez(tmp_path / "d.npz", x=x)
    msg = bad_input(load_npz_images, tmp_path / "d.npz", 4, 1)
    assert "d.npz" in msg and "'x'" in msg and "(2, 0, 1, 3)" in msg


def test_inf_detected(bad_input, tmp_path):
    x = np.zeros((2, 4, 4), dtype=np.float64)
    x[1, 0, 0] = -np.inf
    np.savez(tmp_path / "d.npz", x=x)
    bad_input(load_npz_images, tmp_path / "d.npz", 4, 1, match="(1, 0, 0)")


@pytest.mark.parametrize(
    "x,match",
    [
        (np.zeros((0, 1, 4, 4), np.float32), "empty"),
        (np.zeros((4, 4), np.float32), "rank 2"),
        (np.zeros((2, 5, 4, 7), np.float32), "NCHW or NHWC"),
        (np.zeros((2, 1, 4, 4), np.int32), "dtype int32"),
        (np.array([["a"]]), "dtype"),
    ],
)
def test_bad_image_arrays(bad_input, tmp_path, x, match):
    np.savez(tmp_path / "d.npz", x=x)
    bad_input(load_npz_images, tmp_path / "d.npz", 4, 1, match=match)


def test_object_array_rejected(bad_input, tmp_path):
    np.savez(tmp_path / "d.npz", x=np.array([None, 1], dtype=object))
    bad_input(load_npz_images, tmp_path / "d.npz", 4, 1, match="d.npz")


@pytest.mark.parametrize(
    "y,match",
    [
        (np.zeros(3), "integer class labels"),
        (np.zeros(2, np.int64), "one label per image"),
        (np.array([0, -1, 0]), "negative label"),
    ],
)
def test_bad_labels(bad_input, tmp_path, y, match):
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 1, 4, 4), np.float32), y=y)
    bad_input(load_npz_images, tmp_path / "d.npz", 4, 1, match=match)


@pytest.mark.parametrize(
    "ids,match",
    [
        (np.zeros(4, np.float32), "integer token ids"),
        (np.zeros((1, 2, 3), np.int64), "rank 3"),
        (np.zeros(0, np.int64), "empty"),
        (np.array([1, 300, 2]), "token id 300 at index (1,)"),
    ],
)
def test_bad_tokens(bad_input, tmp_path, ids, match):
    np.savez(tmp_path / "t.npz", tokens=ids)
    bad_input(load_npz_tokens, tmp_path / "t.npz", vocab_size=256, match=match)
