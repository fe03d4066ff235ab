"""A feed larger than a runtime's batch runs in slices, and the slices' outputs join back."""

from __future__ import annotations

import numpy as np
import pytest

from edgegate.errors import BadInput
from edgegate.runtime.base import Runner
from edgegate.runtime.batching import batch_slices, join_outputs, split_feed


def test_slices_cover_every_row_once_at_most_limit_rows_each():
    assert batch_slices(256, 8) == [slice(i, i + 8) for i in range(0, 256, 8)]
    assert batch_slices(19, 8) == [slice(0, 8), slice(8, 16), slice(16, 19)]
    assert batch_slices(8, 8) == [slice(0, 8)]
    assert batch_slices(5, None) == [slice(0, 5)]
    with pytest.raises(ValueError):
        batch_slices(5, 0)


def test_split_feed_cuts_every_batched_input_alike_and_keeps_scalars_whole():
    feed = {"tokens": np.arange(20).reshape(10, 2), "state": np.ones((10, 3)), "t": np.array(4)}
    pieces = split_feed(feed, 4)
    assert [len(p["tokens"]) for p in pieces] == [4, 4, 2]
    assert all(p["t"] == 4 for p in pieces)
    np.testing.assert_array_equal(np.concatenate([p["tokens"] for p in pieces]), feed["tokens"])
    assert split_feed(feed, 16) == [feed]  # nothing to cut: the feed itself


def test_split_feed_refuses_inputs_of_different_batches_when_it_must_cut():
    with pytest.raises(BadInput, match="batches differ"):
        split_feed({"a": np.zeros((9, 1)), "b": np.zeros((3, 1))}, 4)


def test_join_outputs_concatenates_in_order():
    pieces = [{"y": np.full((2, 3), i)} for i in range(3)]
    joined = join_outputs(pieces)["y"]
    assert joined.shape == (6, 3) and joined[:, 0].tolist() == [0, 0, 1, 1, 2, 2]


class _RowsSeen(Runner):
    """A runner that refuses more rows than its limit, as an engine's profile does."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.batch_limit, self.calls = limit, []

    def input_specs(self):
        return []

    def output_names(self):
        return ["y"]

    def _infer(self, feed):
        rows = len(feed["x"])
        assert rows <= self.batch_limit, rows
        self.calls.append(rows)
        return {"y": feed["x"] * 2}


def test_runner_feeds_256_rows_to_a_batch_8_runtime_in_32_calls():
    runner = _RowsSeen(8)
    x = np.arange(256 * 3, dtype=np.float32).reshape(256, 3)
    np.testing.assert_array_equal(runner.run({"x": x})["y"], x * 2)
    assert runner.calls == [8] * 32 and runner.last_latency_ms > 0
