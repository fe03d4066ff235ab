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
    bmm,
    causal_bias,
    strict_lower,
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
    """Same contract as `naive_gated_delta_rule` for 1 <= T <= max_len.

    Batch and heads are flattened into one dim ([BH, T, ...]) up front, so every product is a
    ``bmm`` and every broadcast a plain elementwise op: no 4-D matmul (expands and reshapes
    with two symbolic dims, which XNNPACK does not take) and no unsqueeze of a [BH, T] tensor.
    """
    dt = compute_dtype(q)
    _, T, H, K = q.shape
    V = v.shape[-1]
    scale = resolve_scale(scale, K)

    def heads_first(x: torch.Tensor, last: int) -> torch.Tensor:  # [B,T,H,D] -> [BH,T,D]
        return x.to(dt).transpose(1, 2).reshape(-1, T, last)

    qs = heads_first(q, K) * scale
    ks = heads_first(k, K)
    vs = heads_first(v, V)
    b = heads_first(g.unsqueeze(-1), 1).cumsum(1)  # [BH,T,1]
    bt = heads_first(beta.unsqueeze(-1), 1)  # [BH,T,1]
    kt = ks.transpose(1, 2)  # [BH,K,T]
    decay = (b - b.transpose(1, 2) + causal_bias(T, dt, q.device)).exp()  # [BH,T,T]
    A = strict_lower(bt * bmm(ks, kt) * decay)
    inv = unit_lower_inverse(A, max_len)
    u0 = bmm(inv, bt * vs)  # pseudo-values for a zero initial state
    P = bmm(qs, kt) * decay
    o = bmm(P, u0)
    b_last = b[:, -1:]  # [BH,1,1]
    kd = ks * (b_last - b).exp()  # [BH,T,K]
    state = bmm(kd.transpose(1, 2), u0)  # [BH,K,V]
    if h0 is not None:
        s0 = h0.to(dt).reshape(-1, K, V)
        eb = b.exp()
        w = bmm(inv, bt * eb * ks)  # how S0 shifts the pseudo-values: U = u0 - w S0
        w_s0 = bmm(w, s0)
        o = o + bmm(qs * eb, s0) - bmm(P, w_s0)
        state = state + b_last.exp() * s0 - bmm(kd.transpose(1, 2), w_s0)
    o = o.reshape(-1, H, T, V).transpose(1, 2)
    return o.to(q.dtype), state.reshape(-1, H, K, V).to(q.dtype)
