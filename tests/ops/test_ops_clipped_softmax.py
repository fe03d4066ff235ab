"""clipped_softmax: the streamed (online) form equals the one-shot reference."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from edgegate.ops import chunk_clipped_softmax, clipped_softmax, naive_clipped_softmax

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)


@SETTINGS
@given(
    seed=st.integers(0, 2**16),
    shape=st.lists(st.integers(1, 9), min_size=1, max_size=3),
    last=st.integers(1, 70),
    dim=st.integers(-4, 3),
    chunk=st.sampled_from([1, 3, 8, 64]),
    gamma=st.sampled_from([0.0, -0.03, -0.2]),
    zeta=st.sampled_from([1.0, 1.03]),
    spread=st.sampled_from([1.0, 30.0]),
    mask=st.booleans(),
)
def test_chunk_matches_reference(seed, shape, last, dim, chunk, gamma, zeta, spread, mask):
    full = (*shape, last)
    dim = dim % len(full) if -len(full) <= dim < len(full) else -1
    gen = torch.Generator().manual_seed(seed)
    x = spread * torch.randn(full, generator=gen)
    if mask:  # attention-style -inf masking, including fully masked rows
        x = x.masked_fill(torch.rand(full, generator=gen) < 0.4, float("-inf"))
    ref = naive_clipped_softmax(x.double(), gamma, zeta, dim)
    out = chunk_clipped_softmax(x, gamma, zeta, dim, chunk_size=chunk)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(out.isnan(), ref.isnan())
    torch.testing.assert_close(out.double().nan_to_num(), ref.nan_to_num(), rtol=1e-5, atol=1e-6)
    # Exact zeros are the point of clipping: wherever the unclipped value is clearly < 0.
    pre = (zeta - gamma) * torch.softmax(x.double(), dim) + gamma
    assert (out[pre < -1e-6] == 0).all()


def test_gradcheck_chunked():
    gen = torch.Generator().manual_seed(0)
    x = (3 * torch.randn(2, 3, 11, dtype=torch.float64, generator=gen)).requires_grad_()
    # zeta > 1 and a small gamma keep most entries off the clip boundaries (kinks)
    assert torch.autograd.gradcheck(
        lambda t: chunk_clipped_softmax(t, -0.01, 1.2, dim=-1, chunk_size=4), (x,)
    )


@pytest.mark.parametrize("impl", ["auto", "naive", "chunk"])
def test_public_function(impl):
    x = torch.randn(2, 4, 33)
    out = clipped_softmax(x, -0.03, 1.0, dim=1, chunk_size=4, impl=impl)
    torch.testing.assert_close(out, naive_clipped_softmax(x, -0.03, 1.0, dim=1))
