"""Chunked gated linear scan: closed form inside each chunk, a short loop across chunks.

Inside a chunk, with b = cumsum(g) (b <= 0, non-increasing),
  h_i = exp(b_i) h_in + sum_{j<=i} exp(b_i - b_j) x_j.
Fast path: exp(b_i) * cumsum_j(exp(-b_j) x_j). Each factor is accurate to ~1 ulp and
the cumsum sees the same magnitudes as the direct sum, so this is as accurate as the
recurrence *as long as exp(-b) stays finite and exp(b) normal*, i.e. the chunk decays by
less than half the dtype's exponent range (43 nats in fp32).
Safe path (taken automatically otherwise): the segment-sum weights exp(b_i - b_j) are
formed from differences that are <= 0 on the kept entries and masked to -inf above the
diagonal before exp; exact for any decay, but chunk_size times the input in memory.
"""

from __future__ import annotations

import torch

from edgegate.ops._common import chunk_len, compute_dtype, pad_time, split_limit


def chunk_gated_linear_scan(
    x: torch.Tensor,
    g: torch.Tensor,
    h0: torch.Tensor | None = None,
    *,
    chunk_size: int = 64,
    segment_sum: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as `naive_gated_linear_scan`; x, g: [B,T,H,D], h0: [B,H,D].

    `segment_sum`: None picks the path from the decay range; True/False force it.
    """
    B, T, H, D = x.shape
    dt = compute_dtype(x)
    C = chunk_len(T, chunk_size)
    h = x.new_zeros(B, H, D, dtype=dt) if h0 is None else h0.to(dt)
    if T == 0:
        return x.new_zeros(B, 0, H, D), h.to(x.dtype)
    xs = pad_time(x.to(dt), C, 1)
    N = xs.shape[1] // C
    xs = xs.reshape(B, N, C, H, D)
    b = pad_time(g.to(dt), C, 1).reshape(B, N, C, H, D).cumsum(2)

    if segment_sum is None:
        segment_sum = bool(-b[:, :, -1].min() > split_limit(dt))
    if segment_sum:
        seg = b.unsqueeze(3) - b.unsqueeze(2)  # [B,N,C(i),C(j),H,D]
        causal = torch.ones(C, C, dtype=torch.bool, device=x.device).tril()
        seg = seg.masked_fill(~causal[:, :, None, None], float("-inf"))
        local = (seg.exp() * xs.unsqueeze(2)).sum(3)  # zero incoming state
    else:
        local = b.exp() * torch.cumsum(torch.exp(-b) * xs, dim=2)

    decay_in = b.exp()  # how much of the incoming state survives to step i
    states = []
    for n in range(N):
        states.append(h)
        h = local[:, n, -1] + decay_in[:, n, -1] * h
    y = local + decay_in * torch.stack(states, dim=1).unsqueeze(2)
    y = y.reshape(B, N * C, H, D)[:, :T]
    return y.to(x.dtype), h.to(x.dtype)
