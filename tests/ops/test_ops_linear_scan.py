"""gated_linear_scan: chunked form vs recurrent reference, streaming, gradients, dispatch."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from edgegate.ops import chunk_gated_linear_scan, gated_linear_scan, naive_gated_linear_scan

SETTINGS = settings(max_examples=20, deadline=None, derandomize=True)
LENGTHS = [1, 2, 3, 5, 8, 9, 16, 17, 23, 33]


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    return ((a.double() - ref.double()).norm() / ref.double().norm().clamp_min(1e-30)).item()


def make_inputs(seed: int, B: int, T: int, H: int, D: int, strength: float, with_h0: bool):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, H, D, generator=gen)
    g = -strength * torch.rand(B, T, H, D, generator=gen)
    h0 = torch.randn(B, H, D, generator=gen) if with_h0 else None
    return x, g, h0


shapes = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 2**16),
        "B": st.integers(1, 2),
        "T": st.sampled_from(LENGTHS),
        "H": st.integers(1, 3),
        "D": st.integers(1, 5),
        "strength": st.sampled_from([0.05, 0.7, 6.0]),
        "with_h0": st.booleans(),
    }
)


@SETTINGS
@given(s=shapes, chunk=st.sampled_from([4, 8, 16]))
def test_chunk_matches_reference(s, chunk):
    x, g, h0 = make_inputs(**s)
    ref_y, ref_h = naive_gated_linear_scan(
        x.double(), g.double(), None if h0 is None else h0.double()
    )
    y, h = chunk_gated_linear_scan(x, g, h0, chunk_size=chunk)
    assert y.shape == x.shape and h.shape == ref_h.shape and y.dtype == x.dtype
    assert rel_err(y, ref_y) <= 1e-5
    assert rel_err(h, ref_h) <= 1e-5
    y32, h32 = naive_gated_linear_scan(x, g, h0)
    assert rel_err(y32, ref_y) <= 1e-5 and rel_err(h32, ref_h) <= 1e-5


@SETTINGS
@given(s=shapes, cuts=st.lists(st.integers(0, 33), max_size=3), chunk=st.sampled_from([4, 8]))
def test_streaming_equals_one_pass(s, cuts, chunk):
    x, g, h0 = make_inputs(**s)
    T = x.shape[1]
    bounds = sorted({0, T, *(c for c in cuts if c < T)})
    for fn in (naive_gated_linear_scan, lambda *a: chunk_gated_linear_scan(*a, chunk_size=chunk)):
        full_y, full_h = fn(x, g, h0)
        h, ys = h0, []
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            y, h = fn(x[:, lo:hi], g[:, lo:hi], h)
            ys.append(y)
        assert rel_err(torch.cat(ys, dim=1), full_y) <= 1e-5
        assert rel_err(h, full_h) <= 1e-5


def test_gradcheck_chunked():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 7, 2, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    g = (-torch.rand(1, 7, 2, 3, dtype=torch.float64, generator=gen)).requires_grad_()
    h0 = torch.randn(1, 2, 3, dtype=torch.float64, generator=gen, requires_grad=True)

    def fn(x, g, h0):
        return chunk_gated_linear_scan(x, g, h0, chunk_size=3)

    assert torch.autograd.gradcheck(fn, (x, g, h0))


def test_strong_decay_is_stable():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 128, 2, 8, generator=gen)
    g = torch.full_like(x, -5.0)
    y, h = chunk_gated_linear_scan(x, g)
    ref_y, ref_h = naive_gated_linear_scan(x.double(), g.double())
    assert torch.isfinite(y).all() and torch.isfinite(h).all()
    assert rel_err(y, ref_y) <= 1e-5 and rel_err(h, ref_h) <= 1e-5


@pytest.mark.parametrize("impl", ["auto", "naive", "chunk"])
@pytest.mark.parametrize("T", [1, 2, 40])
def test_public_function(impl, T):
    x, g, h0 = make_inputs(3, 2, T, 2, 4, 0.7, True)
    y, h = gated_linear_scan(x, g, h0, chunk_size=16, impl=impl)
    ref_y, ref_h = naive_gated_linear_scan(x.double(), g.double(), h0.double())
    assert rel_err(y, ref_y) <= 1e-5 and rel_err(h, ref_h) <= 1e-5


def test_bad_impl_raises():
    x, g, _ = make_inputs(0, 1, 3, 1, 2, 0.5, False)
    with pytest.raises(ValueError, match="impl"):
        gated_linear_scan(x, g, impl="fast")


def test_empty_sequence_returns_h0():
    x, g, h0 = make_inputs(0, 2, 0, 3, 4, 0.5, True)
    for fn in (naive_gated_linear_scan, chunk_gated_linear_scan):
        y, h = fn(x, g, h0)
        assert y.shape == (2, 0, 3, 4) and torch.equal(h, h0)


def test_float64_kept():
    x, g, h0 = make_inputs(0, 1, 9, 1, 2, 0.5, True)
    y, h = gated_linear_scan(x.double(), g.double(), h0.double(), chunk_size=4)
    assert y.dtype == h.dtype == torch.float64


def test_mixed_decay_channels_are_stable():
    """Channels from no decay to -80 nats per step side by side."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(1, 100, 1, 6, generator=gen)
    g = torch.tensor([0.0, -1e-3, -0.5, -5.0, -20.0, -80.0]).expand(1, 100, 1, 6)
    y, h = chunk_gated_linear_scan(x, g, chunk_size=32)
    ref_y, ref_h = naive_gated_linear_scan(x.double(), g.double())
    assert rel_err(y, ref_y) <= 1e-5 and rel_err(h, ref_h) <= 1e-5
