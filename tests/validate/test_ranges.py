"""The range check's parts: which points run, how inputs are resized, and what a failed check
may still declare."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from edgegate.dims import DimRange, dim_name
from edgegate.runtime import TorchRunner
from edgegate.validate.parity import Tolerance
from edgegate.validate.ranges import (
    Probe,
    ProbeResult,
    RangeCheck,
    check_ranges,
    narrow,
    probes,
    resize,
)

BATCH = DimRange("tokens", 0, 0, "batch", 1, 1, 8)
LENGTH = DimRange("tokens", 0, 1, "seq_len", 1, 64, 128)


def test_dims_are_named_alike_for_every_target():
    assert dim_name("tokens", 2, False, 0) == "batch"
    assert dim_name("tokens", 2, False, 1) == "seq_len"
    assert [dim_name("images", 4, True, a) for a in (2, 3)] == ["height", "width"]
    assert dim_name("state0", 4, True, 1) == "state0_dim1"


def test_points_cover_both_ends_the_traced_size_and_an_odd_size_between():
    assert BATCH.points() == (1, 2, 8)
    assert LENGTH.points() == (1, 64, 65, 128)
    assert DimRange("images", 0, 2, "height", 32, 32, 64).points() == (32, 49, 64)


def test_each_dim_is_probed_alone_at_a_batch_above_one():
    found = probes([BATCH, LENGTH])
    assert [p.sizes for p in found] == [
        {"batch": 2},
        {"batch": 1},
        {"batch": 8},
        {"batch": 2, "seq_len": 1},
        {"batch": 2, "seq_len": 65},
        {"batch": 2, "seq_len": 128},
    ]
    assert [p.varied for p in found] == [None, "batch", "batch", "seq_len", "seq_len", "seq_len"]


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 5),
    length=st.integers(1, 9),
    size=st.integers(1, 20),
    axis=st.integers(0, 1),
)
def test_resize_gives_the_asked_size_and_keeps_what_fits(rows, length, size, axis):
    tokens = np.arange(rows * length).reshape(rows, length)
    out = resize(tokens, axis, size)
    assert out.shape[axis] == size and out.dtype == tokens.dtype
    kept = min(size, tokens.shape[axis])
    assert np.array_equal(np.take(out, range(kept), axis), np.take(tokens, range(kept), axis))


def test_resize_resamples_float_signals_and_keeps_constants_constant():
    images = np.full((2, 3, 8, 8), 0.25, dtype=np.float32)
    out = resize(images, 2, 13)
    assert out.shape == (2, 3, 13, 8) and out.dtype == np.float32
    assert np.allclose(out, 0.25)


class Truncating(nn.Module):
    """Right up to 16 positions, then wrong: the shape of a graph that baked in its length."""

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = tokens.float()[..., None]
        x = torch.where(torch.arange(x.shape[1])[None, :, None] < 16, x, x * 0.0)
        return x.repeat(1, 1, 4)


class Plain(nn.Module):
    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens.float()[..., None].repeat(1, 1, 4)


def _check(candidate: nn.Module, ranges):
    base = {"tokens": np.random.default_rng(0).integers(1, 256, (8, 16))}
    with (
        TorchRunner(Plain(), ["tokens"], ["logits"]) as ref,
        TorchRunner(candidate, ["tokens"], ["logits"]) as cand,
    ):
        return check_ranges(ref, cand, ranges, base, Tolerance.for_precision("fp32"))


def test_a_candidate_wrong_above_its_traced_length_fails_there_and_is_narrowed():
    length = DimRange("tokens", 0, 1, "seq_len", 1, 16, 32)
    check = _check(Truncating(), [BATCH, length])
    assert not check.passed
    assert [r.probe.sizes.get("seq_len") for r in check.results if not r.ok] == [17, 32]
    assert all("wrong" in f for f in check.failures("m.onnx"))
    narrowed = narrow(check)
    assert narrowed is not None and narrowed.fixed == []
    spans = [(r.name, r.low, r.high) for r in narrowed.ranges]
    assert spans == [("batch", 1, 8), ("seq_len", 1, 16)]
    assert "seq_len declared 1..16 instead of 1..32" in narrowed.notes[0]
    assert _check(Truncating(), narrowed.ranges).passed


def test_a_candidate_right_everywhere_passes():
    assert _check(Plain(), [BATCH, DimRange("tokens", 0, 1, "seq_len", 1, 16, 32)]).passed


def _result(sizes, varied, problem=""):
    return ProbeResult(Probe(sizes, varied), problem)


def test_a_failing_base_point_fixes_the_batch_when_the_traced_batch_passes():
    check = RangeCheck(
        [BATCH, LENGTH],
        [
            _result({"batch": 2}, None, "refused: Reshape"),
            _result({"batch": 1}, "batch"),
            _result({"batch": 8}, "batch", "refused: Reshape"),
            _result({"batch": 2, "seq_len": 1}, "seq_len", "refused: Reshape"),
        ],
    )
    narrowed = narrow(check)
    assert narrowed is not None
    assert [(f.name, f.size) for f in narrowed.fixed] == [("batch", 1)]
    assert narrowed.ranges == [LENGTH]  # judged again once the batch is fixed


def test_a_graph_wrong_at_its_traced_shape_cannot_be_narrowed():
    check = RangeCheck(
        [BATCH],
        [_result({"batch": 2}, None, "wrong: x"), _result({"batch": 1}, "batch", "wrong: x")],
    )
    assert narrow(check) is None


def test_failures_on_both_sides_fix_the_dim_naming_both():
    check = RangeCheck(
        [BATCH, LENGTH],
        [
            _result({"batch": 2}, None),
            _result({"batch": 2, "seq_len": 1}, "seq_len", "refused: CumSum node"),
            _result({"batch": 2, "seq_len": 65}, "seq_len", "wrong: output 'logits'"),
        ],
    )
    narrowed = narrow(check)
    assert narrowed is not None
    (fixed,) = narrowed.fixed
    assert (fixed.name, fixed.size) == ("seq_len", 64)
    assert fixed.reason.startswith("refused at seq_len=1 (CumSum node); wrong at seq_len=65")


@pytest.mark.parametrize("high", [2, 8])
def test_batch_points_stay_inside_a_small_range(high):
    r = DimRange("x", 0, 0, "batch", 1, 1, high)
    assert max(r.points()) == high and min(r.points()) == 1
