"""Loop-free (parallel) scan forms vs naive.py, and their export with a symbolic length.

Random shapes, T=1, odd lengths, with and without an initial state, per-key and per-head
gates, streaming in pieces vs one pass; then `decompose` on exported programs: no edgegate op
left, T still symbolic, and the decomposed program equal to eager at several lengths.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from edgegate.ops import (
    gated_delta_rule,
    gated_linear_attention,
    gated_linear_scan,
    naive_gated_delta_rule,
    naive_gated_linear_attention,
    naive_gated_linear_scan,
    parallel_gated_delta_rule,
    parallel_gated_linear_attention,
    parallel_gated_linear_scan,
)
from edgegate.ops._parallel import unit_lower_inverse
from edgegate.ops.decompose import decompose, edgegate_decompositions, remaining_edgegate_ops

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)
shapes = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 2**16),
        "B": st.integers(1, 2),
        "T": st.sampled_from([1, 2, 3, 7, 16, 33, 64]),
        "H": st.integers(1, 3),
        "K": st.sampled_from([1, 4, 8]),
        "V": st.sampled_from([3, 5]),
        "strength": st.sampled_from([0.05, 0.7, 6.0]),
        "with_h0": st.booleans(),
    }
)


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    return ((a.double() - ref.double()).norm() / ref.double().norm().clamp_min(1e-30)).item()


def _close(got, ref, tol: float = 1e-5) -> None:
    for a, r in zip(got, ref, strict=True):
        assert a.shape == r.shape and a.dtype == r.dtype
        assert rel_err(a, r) < tol, rel_err(a, r)


def _gla_inputs(p, vector_gate: bool, dtype=torch.float32):
    gen = torch.Generator().manual_seed(p["seed"])
    B, T, H, K, V = p["B"], p["T"], p["H"], p["K"], p["V"]
    q, k = (torch.randn(B, T, H, K, generator=gen, dtype=dtype) for _ in range(2))
    v = torch.randn(B, T, H, V, generator=gen, dtype=dtype)
    g_shape = (B, T, H, K) if vector_gate else (B, T, H)
    g = -p["strength"] * torch.rand(g_shape, generator=gen, dtype=dtype)
    h0 = torch.randn(B, H, K, V, generator=gen, dtype=dtype) if p["with_h0"] else None
    return q, k, v, g, h0


def _delta_inputs(p, dtype=torch.float32):
    q, k, v, g, h0 = _gla_inputs(p, vector_gate=False, dtype=dtype)
    gen = torch.Generator().manual_seed(p["seed"] + 1)
    beta = torch.rand(g.shape, generator=gen, dtype=dtype)
    return q, F.normalize(k, dim=-1), v, g, beta, h0


@SETTINGS
@given(p=shapes)
def test_linear_scan_parallel_matches_naive(p):
    gen = torch.Generator().manual_seed(p["seed"])
    B, T, H, D = p["B"], p["T"], p["H"], p["K"]
    x = torch.randn(B, T, H, D, generator=gen)
    g = -p["strength"] * torch.rand(B, T, H, D, generator=gen)
    h0 = torch.randn(B, H, D, generator=gen) if p["with_h0"] else None
    _close(parallel_gated_linear_scan(x, g, h0), naive_gated_linear_scan(x, g, h0))


@SETTINGS
@given(p=shapes, vector_gate=st.booleans())
def test_gla_parallel_matches_naive(p, vector_gate):
    args = _gla_inputs(p, vector_gate)
    _close(parallel_gated_linear_attention(*args), naive_gated_linear_attention(*args))


@SETTINGS
@given(p=shapes)
def test_delta_rule_parallel_matches_naive(p):
    args = _delta_inputs(p)
    _close(parallel_gated_delta_rule(*args, max_len=64), naive_gated_delta_rule(*args))


@pytest.mark.parametrize("family", ["scan", "gla", "delta"])
def test_streaming_in_pieces_equals_one_pass(family):
    p = {"seed": 3, "B": 2, "T": 29, "H": 2, "K": 4, "V": 3, "strength": 0.7, "with_h0": True}
    if family == "delta":
        q, k, v, g, beta, h0 = _delta_inputs(p)
        xs, fn = (q, k, v, g, beta), parallel_gated_delta_rule
    elif family == "gla":
        q, k, v, g, h0 = _gla_inputs(p, vector_gate=True)
        xs, fn = (q, k, v, g), parallel_gated_linear_attention
    else:
        q, k, v, g, h0 = _gla_inputs(p, vector_gate=True)
        xs, fn, h0 = (q, g), parallel_gated_linear_scan, h0[..., 0]
    whole, final = fn(*xs, h0)
    state, outs = h0, []
    for lo, hi in [(0, 1), (1, 12), (12, 13), (13, 29)]:
        out, state = fn(*(x[:, lo:hi] for x in xs), state)
        outs.append(out)
    _close((torch.cat(outs, dim=1), state), (whole, final))


def test_fp16_inputs_compute_in_fp32():
    p = {"seed": 5, "B": 1, "T": 40, "H": 2, "K": 8, "V": 5, "strength": 0.7, "with_h0": False}
    args = _gla_inputs(p, vector_gate=True, dtype=torch.float16)
    got = parallel_gated_linear_attention(*args)
    ref = naive_gated_linear_attention(*args)
    assert got[0].dtype == torch.float16
    _close(got, ref, tol=2e-3)


@pytest.mark.parametrize("N", [1, 2, 3, 8, 13, 31, 64])
def test_unit_lower_inverse_matches_linalg(N):
    gen = torch.Generator().manual_seed(N)
    A = 0.3 * torch.randn(2, N, N, generator=gen, dtype=torch.float64).tril(-1)
    ref = torch.linalg.inv(torch.eye(N, dtype=torch.float64) + A)
    assert rel_err(unit_lower_inverse(A, 64), ref) < 1e-12


def test_unit_lower_inverse_needs_enough_rounds():
    """Too few rounds for N leave the far corner wrong: the test above can fail."""
    A = 0.3 * torch.randn(1, 16, 16, dtype=torch.float64).tril(-1)
    ref = torch.linalg.inv(torch.eye(16, dtype=torch.float64) + A)
    assert rel_err(unit_lower_inverse(A, 4), ref) > 1e-3


class _Scans(nn.Module):
    """All three scans, with an initial state, as a model would call them."""

    def forward(self, q, k, v, g, beta, h0):
        o1, s1 = gated_linear_attention(q, k, v, g, h0)
        o2, s2 = gated_delta_rule(q, F.normalize(k, dim=-1), v, g[..., 0], beta, h0)
        y, h = gated_linear_scan(v, g[..., : v.shape[-1]] * 0.5, h0[..., 0, :])
        return o1 + o2 + y, s1 + s2, h


def _scan_args(B: int, T: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    H, K, V = 2, 4, 3
    return (
        torch.randn(B, T, H, K, generator=gen),
        torch.randn(B, T, H, K, generator=gen),
        torch.randn(B, T, H, V, generator=gen),
        -torch.rand(B, T, H, K, generator=gen),
        torch.rand(B, T, H, generator=gen),
        torch.randn(B, H, K, V, generator=gen),
    )


def test_decomposed_export_keeps_t_symbolic_and_matches_eager():
    T = torch.export.Dim("T", min=1, max=64)
    dyn = ({1: T}, {1: T}, {1: T}, {1: T}, {1: T}, None)
    program = torch.export.export(_Scans(), _scan_args(1, 16), dynamic_shapes=dyn)
    assert remaining_edgegate_ops(program) == [
        "edgegate.gated_delta_rule.default",
        "edgegate.gated_linear_attention.default",
        "edgegate.gated_linear_scan.default",
    ]
    flat = decompose(program, max_len=64)
    assert remaining_edgegate_ops(flat) == []
    model = flat.module()
    for length in (1, 5, 16, 41, 64):
        args = _scan_args(1, length, seed=length)
        with torch.no_grad():
            _close(model(*args), _Scans()(*args))


def test_max_len_is_checked():
    with pytest.raises(ValueError, match="max_len"):
        edgegate_decompositions(0)
    with pytest.raises(ValueError, match="max_len"):
        edgegate_decompositions(10**6)
