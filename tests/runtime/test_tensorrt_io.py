"""What TensorRT's Python API leaves to the caller, checked without TensorRT: the profile's
shapes (``set_input_shape`` only returns False), outputs' shapes once the inputs' are set (-1
until then), the engine's dtypes, and the batch one call may carry."""

from __future__ import annotations

import numpy as np
import pytest

from edgegate.errors import BadInput
from edgegate.runtime.tensorrt_io import (
    NUMPY_DTYPES,
    Profile,
    batch_limit,
    cast_feed,
    numpy_dtype,
    profile_batch_limit,
    resolved_shape,
)

TOKENS = Profile("tokens", (1, 1), (1, 32), (8, 64))
IMAGES = Profile("images", (1, 3, 16, 16), (1, 3, 32, 32), (8, 3, 64, 64))


def test_every_runnable_tensorrt_type_maps_to_numpy_by_name():
    assert numpy_dtype("FLOAT") == np.float32 and numpy_dtype("HALF") == np.float16
    assert numpy_dtype("DataType.INT32") == np.int32  # str() of the enum member works too
    assert {numpy_dtype(n).name for n in NUMPY_DTYPES} == set(NUMPY_DTYPES.values())


@pytest.mark.parametrize("name", ["BF16", "FP8", "INT4", "FP4"])
def test_types_numpy_cannot_hold_are_refused_by_name(name):
    with pytest.raises(BadInput, match=name):
        numpy_dtype(name)


def test_feeds_are_cast_to_the_engines_dtypes():
    half = cast_feed("images", np.ones((2, 3), np.float32), np.dtype("float16"))
    assert half.dtype == np.float16 and half.flags.c_contiguous
    tokens = cast_feed("tokens", np.arange(6, dtype=np.int64).reshape(2, 3).T, np.dtype("int32"))
    assert tokens.dtype == np.int32 and tokens.flags.c_contiguous
    assert tokens.tolist() == [[0, 3], [1, 4], [2, 5]]
    assert cast_feed("gate", np.array([True, False]), np.dtype("bool")).dtype == np.bool_


def test_casts_that_would_change_the_feed_are_refused():
    with pytest.raises(BadInput, match="outside the engine's int32 range"):
        cast_feed("tokens", np.array([2**40]), np.dtype("int32"))
    with pytest.raises(BadInput, match="input 'tokens' is float32; the engine takes int32"):
        cast_feed("tokens", np.zeros(2, np.float32), np.dtype("int32"))


def test_profile_accepts_shapes_within_min_and_max_and_names_what_it_refuses():
    assert TOKENS.refusal((8, 64)) is None and TOKENS.refusal((1, 1)) is None
    line = TOKENS.refusal((9, 32))
    assert line == (
        "input 'tokens' of shape [9, 32] does not fit the engine (outside the profile: "
        "min [1, 1], max [8, 64])"
    )
    assert "rank 3, the profile's is 2" in TOKENS.refusal((1, 2, 3))
    assert "outside the profile" in IMAGES.refusal((1, 3, 8, 32))


def test_the_batch_per_call_is_the_tightest_of_profile_and_manifest():
    assert profile_batch_limit([TOKENS, Profile("state", (1, 4), (1, 4), (4, 4))]) == 4
    assert profile_batch_limit([]) is None
    assert batch_limit(None, 8) == 8 and batch_limit(16, 8) == 8 and batch_limit(2, 8) == 2
    assert batch_limit(None, None) is None


def test_an_output_shape_still_unresolved_is_refused_before_allocation():
    assert resolved_shape("logits", (2, 16, 256)) == (2, 16, 256)
    with pytest.raises(BadInput, match=r"output 'logits' has shape \[-1, 16, 256\]"):
        resolved_shape("logits", (-1, 16, 256))
