"""Recurrent reference for the gated delta rule (Gated DeltaNet)."""

from __future__ import annotations

import torch

from edgegate.ops._common import compute_dtype, resolve_scale


def naive_gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    h0: torch.Tensor | None = None,
    scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """S = exp(g_t) S_{t-1}; u = beta_t (v_t - k_t S); S_t = S + k_t^T u; o_t = (scale q_t) S_t.

    q, k: [B,T,H,K]; v: [B,T,H,V]; g, beta: [B,T,H]; h0: [B,H,K,V].
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    scale = resolve_scale(scale, K)
    dt = compute_dtype(q)
    S = q.new_zeros(B, H, K, V, dtype=dt) if h0 is None else h0.to(dt)
    outs = []
    for t in range(T):
        kt = k[:, t].to(dt)
        S = torch.exp(g[:, t].to(dt))[..., None, None] * S
        err = v[:, t].to(dt) - torch.einsum("bhk,bhkv->bhv", kt, S)
        u = beta[:, t].to(dt).unsqueeze(-1) * err
        S = S + kt.unsqueeze(-1) * u.unsqueeze(-2)
        outs.append(torch.einsum("bhk,bhkv->bhv", q[:, t].to(dt) * scale, S))
    o = torch.stack(outs, dim=1) if T else q.new_zeros(B, 0, H, V, dtype=dt)
    return o.to(q.dtype), S.to(q.dtype)
