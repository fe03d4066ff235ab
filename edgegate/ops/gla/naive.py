"""Recurrent reference for gated linear attention (GLA / Mamba-2 / RetNet style decay)."""

from __future__ import annotations

import torch

from edgegate.ops._common import compute_dtype, resolve_scale


def naive_gated_linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    h0: torch.Tensor | None = None,
    scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t;  o_t = (scale * q_t) S_t.

    q, k: [B,T,H,K]; v: [B,T,H,V]; g: [B,T,H,K] or [B,T,H] (broadcast over K);
    h0: [B,H,K,V]. Returns (o [B,T,H,V], S_T [B,H,K,V]).
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    scale = resolve_scale(scale, K)
    dt = compute_dtype(q)
    if g.dim() == 3:
        g = g.unsqueeze(-1).expand(B, T, H, K)
    S = q.new_zeros(B, H, K, V, dtype=dt) if h0 is None else h0.to(dt)
    outs = []
    for t in range(T):
        decay = torch.exp(g[:, t].to(dt)).unsqueeze(-1)  # [B,H,K,1]
        S = decay * S + k[:, t].to(dt).unsqueeze(-1) * v[:, t].to(dt).unsqueeze(-2)
        outs.append(torch.einsum("bhk,bhkv->bhv", q[:, t].to(dt) * scale, S))
    o = torch.stack(outs, dim=1) if T else q.new_zeros(B, 0, H, V, dtype=dt)
    return o.to(q.dtype), S.to(q.dtype)
