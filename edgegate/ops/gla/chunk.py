"""Chunkwise-parallel gated linear attention.

Per chunk of C steps with b = cumsum(g) inside the chunk:
  o_i = (q_i * exp(b_i)) S_in + sum_{j<=i} <q_i, k_j * exp(b_i - b_j)> v_j
  S_out = exp(b_C) * S_in + sum_j (k_j * exp(b_C - b_j))^T v_j
Every exponent above is <= 0, so strong decay underflows to 0 instead of overflowing.

The intra-chunk scores are the delicate part with per-channel (vector) gates, where the
decay cannot be pulled out of the sum over K:
- split path: exp(b_i - b_j) = exp(b_i) * exp(-b_j), one matmul. Each factor carries
  ~1 ulp and the sums see the same magnitudes as the direct form, so it is as accurate
  *while exp(-b) stays finite and exp(b) normal*. It is taken when no chunk decays by
  more than half the dtype's exponent range (43 nats in fp32).
- secondary chunking otherwise (e.g. g = -5 per step gives 320 nats per 64-step chunk):
  sub-chunks of c steps; a row i of sub-chunk I against an earlier sub-chunk J goes
  through exp(b_i - f_I) * exp(f_I - e_J) * exp(e_J - b_j), where e_J is the last b of
  J and f_I = e_{I-1}, every factor <= 1; inside a sub-chunk the [c, c, K] decay tensor
  is formed explicitly. Exact for any decay, but several passes over c x the input.
Scalar (per-head) gates need neither: their [C, C] decay matrix is formed exactly.
"""

from __future__ import annotations

import math

import torch

from edgegate.ops._common import (
    chunk_len,
    compute_dtype,
    resolve_scale,
    split_limit,
    to_chunks,
)


def _intra_scalar(q: torch.Tensor, k: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Causal decayed scores for head-wise gates; b: [B,H,N,C]."""
    C = b.shape[-1]
    causal = torch.ones(C, C, dtype=torch.bool, device=b.device).tril()
    seg = (b.unsqueeze(-1) - b.unsqueeze(-2)).masked_fill(~causal, float("-inf"))
    return (q @ k.transpose(-1, -2)) * seg.exp()


def _intra_split(
    q_in: torch.Tensor, k: torch.Tensor, v: torch.Tensor, b: torch.Tensor
) -> torch.Tensor:
    """Intra-chunk output for bounded per-channel decay; q_in = q * exp(b)."""
    C = b.shape[-2]
    causal = torch.ones(C, C, dtype=torch.bool, device=b.device).tril()
    scores = q_in @ (k * torch.exp(-b)).transpose(-1, -2)
    return scores.masked_fill(~causal, 0.0) @ v


def _intra_secondary(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, b: torch.Tensor, c: int
) -> torch.Tensor:
    """Intra-chunk output for per-channel gates of any strength; b: [B,H,N,C,K]."""
    B, H, N, C, K = q.shape
    ns = C // c
    dev = q.device
    qq, kk, bb = (t.reshape(B, H, N, ns, c, K) for t in (q, k, b))

    # Diagonal sub-blocks: explicit per-channel decay. Above the diagonal the exponent is
    # positive; clamping keeps it finite and the tril mask on the scores drops it.
    seg = (bb.unsqueeze(-2) - bb.unsqueeze(-3)).clamp(max=0)  # [..., c(i), c(j), K]
    a_diag = (seg.exp() * kk.unsqueeze(-3)) @ qq.unsqueeze(-1)  # [..., c(i), c(j), 1]
    tri = torch.ones(c, c, dtype=torch.bool, device=dev).tril()
    a_diag = a_diag.squeeze(-1).masked_fill(~tri, 0.0)
    o = (a_diag @ v.reshape(B, H, N, ns, c, -1)).reshape(B, H, N, C, -1)
    if ns == 1:
        return o

    # Off-diagonal sub-blocks through the three factors <= 1 (module docstring).
    e = bb[..., -1, :]  # [B,H,N,ns,K]
    f = torch.cat([torch.zeros_like(e[:, :, :, :1]), e[:, :, :, :-1]], dim=3)
    q_t = qq * torch.exp(bb - f.unsqueeze(-2))
    k_t = kk * torch.exp(e.unsqueeze(-2) - bb)
    later = torch.ones(ns, ns, dtype=torch.bool, device=dev).tril(-1)
    mid = torch.exp((f.unsqueeze(4) - e.unsqueeze(3)).clamp(max=0))  # [B,H,N,ns(I),ns(J),K]
    mid = mid.masked_fill(~later[:, :, None], 0.0)
    k_side = (mid.unsqueeze(-2) * k_t.unsqueeze(3)).reshape(B, H, N, ns, C, K)
    a_off = (q_t @ k_side.transpose(-1, -2)).reshape(B, H, N, C, C)
    return o + a_off @ v


def chunk_gated_linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    h0: torch.Tensor | None = None,
    scale: float | None = None,
    *,
    chunk_size: int = 64,
    sub_chunk_size: int = 8,
    secondary_chunking: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as `naive_gated_linear_attention`.

    `secondary_chunking` (vector gates only): None picks it from the decay range;
    True/False force it (tests exercise both).
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    scale = resolve_scale(scale, K)
    dt = compute_dtype(q)
    S = q.new_zeros(B, H, K, V, dtype=dt) if h0 is None else h0.to(dt)
    c = math.gcd(chunk_size, max(1, sub_chunk_size))
    C = chunk_len(T, chunk_size, c)
    if T == 0:
        return q.new_zeros(B, 0, H, V), S.to(q.dtype)

    qc = to_chunks(q.to(dt) * scale, C)
    kc = to_chunks(k.to(dt), C)
    vc = to_chunks(v.to(dt), C)
    b = to_chunks(g.to(dt), C).cumsum(3)  # [B,H,N,C] or [B,H,N,C,K]
    N = qc.shape[2]

    scalar_gate = g.dim() == 3
    if scalar_gate:
        o = _intra_scalar(qc, kc, b) @ vc
        b = b.unsqueeze(-1)  # broadcast over K from here on
    q_in = qc * b.exp()  # weight of the incoming state at each step
    if not scalar_gate:
        if secondary_chunking is None:  # b <= 0 is non-increasing: the last step decays most
            secondary_chunking = bool(-b[..., -1, :].min() > split_limit(dt))
        if secondary_chunking:
            o = _intra_secondary(qc, kc, vc, b, c)
        else:
            o = _intra_split(q_in, kc, vc, b)

    b_last = b[..., -1:, :]  # [B,H,N,1,K or 1]
    u = (kc * torch.exp(b_last - b)).transpose(-1, -2) @ vc  # [B,H,N,K,V]
    decay = b_last.exp().transpose(-1, -2)  # [B,H,N,K or 1,1]

    states = []
    for n in range(N):
        states.append(S)
        S = decay[:, :, n] * S + u[:, :, n]
    o = o + q_in @ torch.stack(states, dim=2)
    o = o.reshape(B, H, N * C, V)[:, :, :T].transpose(1, 2)
    return o.to(q.dtype), S.to(q.dtype)
