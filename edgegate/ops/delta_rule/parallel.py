"""Loop-free gated delta rule: the chunk form's UT transform over the whole sequence at once.

With b = cumsum(g), D_ts = exp(b_t - b_s) (s <= t) and A = strict_lower(beta K K^T * D), the
pseudo-values solve (I + A) U = beta V - beta exp(b) K S0 (see chunk.py). The inverse comes from
matmuls only (`unit_lower_inverse`), so there is no T-dependent loop and no linear-algebra op:
it exports with a symbolic T up to ``max_len`` and converts where loops do not. O(T^2) memory.
"""

from __future__ import annotations

import torch

from edgegate.ops._common import compute_dtype, resolve_scale
from edgegate.ops._parallel import (
    MAX_PARALLEL_T,
    causal_decay,
    causal_mask,
    unit_lower_inverse,
)


def parallel_gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    h0: torch.Tensor | None = None,
    scale: float | None = None,
    *,
    max_len: int = MAX_PARALLEL_T,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as `naive_gated_delta_rule` for 1 <= T <= max_len."""
    dt = compute_dtype(q)
    scale = resolve_scale(scale, q.shape[-1])
    qs = q.to(dt).transpose(1, 2) * scale  # [B,H,T,K]
    ks = k.to(dt).transpose(1, 2)
    vs = v.to(dt).transpose(1, 2)  # [B,H,T,V]
    b = g.to(dt).transpose(1, 2).cumsum(-1)  # [B,H,T]
    bt = beta.to(dt).transpose(1, 2).unsqueeze(-1)  # [B,H,T,1]
    decay = causal_decay(b, causal_mask(q.shape[1], q.device))  # inclusive, [B,H,T,T]
    strict = causal_mask(q.shape[1], q.device, strict=True)
    A = torch.where(strict, bt * (ks @ ks.transpose(-1, -2)) * decay, torch.zeros_like(decay))
    inv = unit_lower_inverse(A, max_len)
    u0 = inv @ (bt * vs)  # pseudo-values for a zero initial state
    P = (qs @ ks.transpose(-1, -2)) * decay
    o = P @ u0
    b_last = b[:, :, -1:].unsqueeze(-1)  # [B,H,1,1]
    kd = ks * (b_last.squeeze(-1) - b).exp().unsqueeze(-1)  # [B,H,T,K]
    state = kd.transpose(-1, -2) @ u0
    if h0 is not None:
        s0 = h0.to(dt)
        eb = b.exp().unsqueeze(-1)
        w = inv @ (bt * eb * ks)  # how S0 shifts the pseudo-values: U = u0 - w S0
        w_s0 = w @ s0
        o = o + (qs * eb) @ s0 - P @ w_s0
        state = state + b_last.exp() * s0 - kd.transpose(-1, -2) @ w_s0
    return o.transpose(1, 2).to(q.dtype), state.to(q.dtype)
