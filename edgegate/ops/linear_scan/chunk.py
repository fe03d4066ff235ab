"""Chunked gated linear scan: a log-depth scan inside each chunk, a short loop across chunks.

Inside a chunk, h_i = A_i h_in + sum_{j<=i} (a_{j+1} ... a_i) x_j with a = exp(g) and
A_i = a_1 ... a_i. A Hillis-Steele doubling scan gets both in log2(chunk) rounds by
combining (a, h) pairs: h_i += a_i h_{i-s}, a_i *= a_{i-s}. It only ever multiplies
decays <= 1, so strong decay underflows to 0 and nothing overflows, whatever the gate;
it needs no more memory than the input. The closed forms are worse on both counts:
exp(b_i) * cumsum(exp(-b_j) x_j) with b = cumsum(g) overflows once a chunk decays by
~88 nats in fp32, and the segment-sum matrix exp(b_i - b_j) is chunk_size times the
input (and measured ~100x slower on CPU at T=1024, D=256).
"""

from __future__ import annotations

import torch

from edgegate.ops._common import chunk_len, compute_dtype, pad_time


def _doubling_scan(a: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inclusive scan of h_i = a_i h_{i-1} + x_i along dim 2 from a zero state.

    Returns (h, prod_{j<=i} a_j). Out of place, so autograd sees plain ops.
    """
    C = x.shape[2]
    s = 1
    while s < C:
        x = torch.cat([x[:, :, :s], x[:, :, s:] + a[:, :, s:] * x[:, :, :-s]], dim=2)
        a = torch.cat([a[:, :, :s], a[:, :, s:] * a[:, :, :-s]], dim=2)
        s *= 2
    return x, a


def chunk_gated_linear_scan(
    x: torch.Tensor,
    g: torch.Tensor,
    h0: torch.Tensor | None = None,
    *,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as `naive_gated_linear_scan`; x, g: [B,T,H,D], h0: [B,H,D]."""
    B, T, H, D = x.shape
    dt = compute_dtype(x)
    C = chunk_len(T, chunk_size)
    h = x.new_zeros(B, H, D, dtype=dt) if h0 is None else h0.to(dt)
    if T == 0:
        return x.new_zeros(B, 0, H, D), h.to(x.dtype)
    xs = pad_time(x.to(dt), C, 1)
    N = xs.shape[1] // C
    decay = pad_time(g.to(dt), C, 1).reshape(B, N, C, H, D).exp()
    local, decay_in = _doubling_scan(decay, xs.reshape(B, N, C, H, D))

    states = []  # state entering each chunk
    for n in range(N):
        states.append(h)
        h = local[:, n, -1] + decay_in[:, n, -1] * h
    y = local + decay_in * torch.stack(states, dim=1).unsqueeze(2)
    y = y.reshape(B, N * C, H, D)[:, :T]
    return y.to(x.dtype), h.to(x.dtype)
