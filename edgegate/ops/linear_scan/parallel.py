"""Loop-free gated linear scan: y_t = sum_{s<=t} exp(b_t - b_s) x_s + exp(b_t) h0, b = cumsum(g).

One masked [T, T] decay per channel and a batched matvec; no T-dependent loop, so it exports
with a symbolic T to converters that take no loops (Core ML, XNNPACK). O(T^2) memory.
"""

from __future__ import annotations

import torch

from edgegate.ops._common import compute_dtype
from edgegate.ops._parallel import causal_decay, causal_mask


def parallel_gated_linear_scan(
    x: torch.Tensor, g: torch.Tensor, h0: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as `naive_gated_linear_scan` (T >= 1)."""
    dt = compute_dtype(x)
    xs = x.to(dt).permute(0, 2, 3, 1)  # [B,H,D,T]
    b = g.to(dt).permute(0, 2, 3, 1).cumsum(-1)
    decay = causal_decay(b, causal_mask(x.shape[1], x.device))  # [B,H,D,T,T]
    y = (decay @ xs.unsqueeze(-1)).squeeze(-1)
    if h0 is not None:
        y = y + b.exp() * h0.to(dt).unsqueeze(-1)
    h = y[..., -1]
    return y.permute(0, 3, 1, 2).to(x.dtype), h.to(x.dtype)
