"""The gated-scan ops wrapped as leaf modules.

A module per scan call lets tools find it by type: quantizers keep it in float (design §4),
tracers can treat it as a leaf, and `count_macs` swaps its measured count for an analytic
one (a custom-op implementation is invisible to FlopCounterMode): `analytic_macs(*args)`
takes the same positional arguments as `forward`.
"""

from __future__ import annotations

import torch
from torch import nn

from edgegate.ops import gated_delta_rule, gated_linear_attention, gated_linear_scan


class LinearScan(nn.Module):
    """h_t = exp(g_t) * h_{t-1} + x_t (elementwise), y_t = h_t; x, g [B,T,H,D]."""

    def forward(
        self, x: torch.Tensor, g: torch.Tensor, h0: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return gated_linear_scan(x, g, h0)

    @staticmethod
    def analytic_macs(x: torch.Tensor, *_: object) -> int:
        """One multiply-add per element and step."""
        return x.numel()


class GLAScan(nn.Module):
    """S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t; o_t = scale q_t S_t; state [B,H,K,V]."""

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        g: torch.Tensor,
        h0: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return gated_linear_attention(q, k, v, g, h0)

    @staticmethod
    def analytic_macs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *_: object) -> int:
        """Recurrent form: decay+outer product (K*V) and read-out (K*V) per head and step."""
        b, t, h, dk = q.shape
        return 2 * b * t * h * dk * v.shape[-1]


class DeltaRuleScan(nn.Module):
    """Gated delta rule; g, beta [B,T,H]; state [B,H,K,V]."""

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        g: torch.Tensor,
        beta: torch.Tensor,
        h0: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return gated_delta_rule(q, k, v, g, beta, h0)

    @staticmethod
    def analytic_macs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *_: object) -> int:
        """k S, outer-product update and read-out: 3 * K * V per head and step."""
        b, t, h, dk = q.shape
        return 3 * b * t * h * dk * v.shape[-1]
