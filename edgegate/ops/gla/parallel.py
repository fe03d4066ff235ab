"""Loop-free gated linear attention, the masked quadratic form (b = cumsum(g) over T):

  o_t = sum_{s<=t} <q_t, k_s * exp(b_t - b_s)> v_s + (q_t * exp(b_t)) S0
  S_T = exp(b_T) * S0 + sum_s (k_s * exp(b_T - b_s))^T v_s

Every exponent is <= 0 (masked to -inf before exp above the diagonal), so nothing overflows.
Per-channel gates need a [T, T, K] decay, per-head gates a [T, T] one. Only cumsum, exp,
where, elementwise products, sums and matmuls: it exports with a symbolic T and converts where
loops and custom ops do not. O(T^2 K) memory; in fp16 the differences of a long cumsum lose
precision, so it computes in fp32.
"""

from __future__ import annotations

import torch

from edgegate.ops._common import compute_dtype, resolve_scale
from edgegate.ops._parallel import causal_decay, causal_mask


def parallel_gated_linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    h0: torch.Tensor | None = None,
    scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as `naive_gated_linear_attention` (T >= 1)."""
    dt = compute_dtype(q)
    scale = resolve_scale(scale, q.shape[-1])
    mask = causal_mask(q.shape[1], q.device)
    qs = q.to(dt).transpose(1, 2) * scale  # [B,H,T,K]
    ks = k.to(dt).transpose(1, 2)
    vs = v.to(dt).transpose(1, 2)  # [B,H,T,V]
    if g.dim() == 3:  # per-head gate: b [B,H,T]
        b = g.to(dt).transpose(1, 2).cumsum(-1)
        scores = (qs @ ks.transpose(-1, -2)) * causal_decay(b, mask)
        b_k = b.unsqueeze(-1)  # [B,H,T,1], broadcast over K
    else:  # per-channel gate: b [B,H,T,K]
        b_k = g.to(dt).transpose(1, 2).cumsum(2)
        decay = causal_decay(b_k.transpose(-1, -2), mask)  # [B,H,K,T,T]
        scores = qs.transpose(-1, -2).unsqueeze(-1) * decay * ks.transpose(-1, -2).unsqueeze(-2)
        scores = scores.sum(2)  # [B,H,T,T]
    o = scores @ vs
    b_last = b_k[:, :, -1:]  # [B,H,1,K or 1]
    kd = ks * (b_last - b_k).exp()
    state = kd.transpose(-1, -2) @ vs  # [B,H,K,V]
    if h0 is not None:
        s0 = h0.to(dt)
        o = o + (qs * b_k.exp()) @ s0
        state = state + b_last.transpose(-1, -2).exp() * s0
    return o.transpose(1, 2).to(q.dtype), state.to(q.dtype)
