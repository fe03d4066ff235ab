"""gated_delta_rule: chunked (WY) form vs recurrent reference, streaming, gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from edgegate.ops import chunk_gated_delta_rule, gated_delta_rule, naive_gated_delta_rule

SETTINGS = settings(max_examples=20, deadline=None, derandomize=True)
LENGTHS = [1, 2, 3, 5, 8, 9, 16, 17, 23, 33]


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    return ((a.double() - ref.double()).norm() / ref.double().norm().clamp_min(1e-30)).item()


def make_inputs(
    seed: int,
    B: int,
    T: int,
    H: int,
    K: int,
    V: int,
    strength: float,
    with_h0: bool,
    dtype: torch.dtype = torch.float32,
):
    """Gated DeltaNet's regime: unit keys and beta in (0, 1) keep the update contractive."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, H, K, generator=gen, dtype=dtype)
    k = F.normalize(torch.randn(B, T, H, K, generator=gen, dtype=dtype), dim=-1)
    v = torch.randn(B, T, H, V, generator=gen, dtype=dtype)
    g = -strength * torch.rand(B, T, H, generator=gen, dtype=dtype)
    beta = torch.rand(B, T, H, generator=gen, dtype=dtype)
    h0 = torch.randn(B, H, K, V, generator=gen, dtype=dtype) if with_h0 else None
    return q, k, v, g, beta, h0


def double(*ts):
    return [None if t is None else t.double() for t in ts]


shapes = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 2**16),
        "B": st.integers(1, 2),
        "T": st.sampled_from(LENGTHS),
        "H": st.integers(1, 3),
        "K": st.sampled_from([1, 4, 8]),
        "V": st.sampled_from([3, 5]),
        "strength": st.sampled_from([0.05, 0.7, 6.0]),
        "with_h0": st.booleans(),
    }
)


@SETTINGS
@given(s=shapes, chunk=st.sampled_from([4, 8, 16]))
def test_chunk_matches_reference(s, chunk):
    q, k, v, g, beta, h0 = make_inputs(**s)
    ref_o, ref_s = naive_gated_delta_rule(*double(q, k, v, g, beta, h0))
    o, S = chunk_gated_delta_rule(q, k, v, g, beta, h0, chunk_size=chunk)
    assert o.shape == ref_o.shape and S.shape == ref_s.shape and o.dtype == q.dtype
    assert rel_err(o, ref_o) <= 1e-5
    assert rel_err(S, ref_s) <= 1e-5
    o32, s32 = naive_gated_delta_rule(q, k, v, g, beta, h0)
    assert rel_err(o32, ref_o) <= 1e-5 and rel_err(s32, ref_s) <= 1e-5


@SETTINGS
@given(s=shapes, cuts=st.lists(st.integers(0, 33), max_size=3), chunk=st.sampled_from([4, 8]))
def test_streaming_equals_one_pass(s, cuts, chunk):
    q, k, v, g, beta, h0 = make_inputs(**s)
    T = q.shape[1]
    bounds = sorted({0, T, *(c for c in cuts if c < T)})

    def chunked(*a):
        return chunk_gated_delta_rule(*a, chunk_size=chunk)

    for fn in (naive_gated_delta_rule, chunked):
        full_o, full_s = fn(q, k, v, g, beta, h0)
        S, outs = h0, []
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            sl = slice(lo, hi)
            o, S = fn(q[:, sl], k[:, sl], v[:, sl], g[:, sl], beta[:, sl], S)
            outs.append(o)
        assert rel_err(torch.cat(outs, dim=1), full_o) <= 1e-5
        assert rel_err(S, full_s) <= 1e-5


def test_gradcheck_chunked():
    inputs = make_inputs(0, 1, 7, 1, 3, 2, 1.0, True, torch.float64)
    inputs = tuple(t.requires_grad_() for t in inputs)

    def fn(q, k, v, g, beta, h0):
        return chunk_gated_delta_rule(q, k, v, g, beta, h0, chunk_size=3)

    assert torch.autograd.gradcheck(fn, inputs)


def test_strong_decay_is_stable():
    q, k, v, _, beta, h0 = make_inputs(1, 1, 128, 2, 16, 8, 1.0, True)
    g = torch.full((1, 128, 2), -5.0)
    o, S = chunk_gated_delta_rule(q, k, v, g, beta, h0)
    ref_o, ref_s = naive_gated_delta_rule(*double(q, k, v, g, beta, h0))
    assert torch.isfinite(o).all() and torch.isfinite(S).all()
    assert rel_err(o, ref_o) <= 1e-5 and rel_err(S, ref_s) <= 1e-5


@pytest.mark.parametrize("impl", ["auto", "naive", "chunk"])
@pytest.mark.parametrize("T", [1, 2, 40])
def test_public_function(impl, T):
    q, k, v, g, beta, h0 = make_inputs(3, 2, T, 2, 4, 3, 0.7, True)
    o, S = gated_delta_rule(q, k, v, g, beta, h0, scale=0.3, chunk_size=16, impl=impl)
    ref_o, ref_s = naive_gated_delta_rule(*double(q, k, v, g, beta, h0), scale=0.3)
    assert rel_err(o, ref_o) <= 1e-5 and rel_err(S, ref_s) <= 1e-5
