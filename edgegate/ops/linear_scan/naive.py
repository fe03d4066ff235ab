"""Recurrent reference for the gated linear scan: one step at a time, obviously correct."""

from __future__ import annotations

import torch

from edgegate.ops._common import compute_dtype


def naive_gated_linear_scan(
    x: torch.Tensor, g: torch.Tensor, h0: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """h_t = exp(g_t) * h_{t-1} + x_t; y_t = h_t. x, g: [B,T,H,D]; h0: [B,H,D]."""
    B, T, H, D = x.shape
    dt = compute_dtype(x)
    h = x.new_zeros(B, H, D, dtype=dt) if h0 is None else h0.to(dt)
    ys = []
    for t in range(T):
        h = torch.exp(g[:, t].to(dt)) * h + x[:, t].to(dt)
        ys.append(h)
    y = torch.stack(ys, dim=1) if T else x.new_zeros(B, 0, H, D, dtype=dt)
    return y.to(x.dtype), h.to(x.dtype)
