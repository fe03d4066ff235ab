"""Gated DeltaNet token mixer (Yang et al. 2025), built on `gated_delta_rule`."""

from __future__ import annotations

import math

import torch
from torch import nn

from edgegate.models.blocks.gate import Gate
from edgegate.models.blocks.scans import DeltaRuleScan


class L2Norm(nn.Module):
    """Normalise the last dim to unit length; the delta rule is stable only for |k| = 1."""

    def __init__(self, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / x.norm(dim=-1, keepdim=True).clamp_min(self.eps)


class GatedDeltaNetMixer(nn.Module):
    """x [B,T,dim] (+ state [B,H,K,V]) -> (y [B,T,dim], final state).

    q, k: SiLU then L2-normalised per head; beta = sigmoid(W_b x) (a `Gate` with role "scan":
    it parameterises the scan, which stays float by default); log decay
    g = -exp(A_log) * softplus(W_a x + dt_bias), initialised as in Mamba-2 / fla. No short
    convolution, so the only recurrent state is the scan state.
    """

    def __init__(self, dim: int, heads: int = 4, head_dim: int = 0, expand_v: float = 1.0) -> None:
        super().__init__()
        head_k = head_dim or dim // heads
        head_v = int(head_k * expand_v)
        self.heads, self.head_k, self.head_v = heads, head_k, head_v
        self.q_proj = nn.Linear(dim, heads * head_k, bias=False)
        self.k_proj = nn.Linear(dim, heads * head_k, bias=False)
        self.v_proj = nn.Linear(dim, heads * head_v, bias=False)
        self.qk_act = nn.SiLU()
        self.qk_norm = L2Norm()
        self.a_proj = nn.Linear(dim, heads, bias=False)
        self.b_proj = nn.Linear(dim, heads, bias=False)
        self.A_log = nn.Parameter(torch.log(torch.empty(heads).uniform_(1.0, 16.0)))
        dt = torch.exp(torch.empty(heads).uniform_(math.log(1e-3), math.log(1e-1))).clamp_min(1e-4)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
        self.softplus = nn.Softplus()
        self.beta_gate = Gate("sigmoid", role="scan")
        self.scan = DeltaRuleScan()
        self.norm = nn.LayerNorm(head_v)
        self.g_proj = nn.Linear(dim, heads * head_v)
        self.out_gate = Gate("sigmoid")
        self.o_proj = nn.Linear(heads * head_v, dim, bias=False)

    def state_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, self.heads, self.head_k, self.head_v)

    def init_state(self, batch: int, device: torch.device | str | None = None) -> torch.Tensor:
        return torch.zeros(self.state_shape(batch), device=device)

    def forward(
        self, x: torch.Tensor, state: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hk = (self.heads, self.head_k)
        q = self.qk_norm(self.qk_act(self.q_proj(x)).unflatten(-1, hk))
        k = self.qk_norm(self.qk_act(self.k_proj(x)).unflatten(-1, hk))
        v = self.v_proj(x).unflatten(-1, (self.heads, self.head_v))
        g = -torch.exp(self.A_log) * self.softplus(self.a_proj(x) + self.dt_bias)  # [B,T,H]
        beta = self.beta_gate(self.b_proj(x))
        o, new_state = self.scan(q, k, v, g, beta, state)
        o = self.norm(o).flatten(2) * self.out_gate(self.g_proj(x))
        return self.o_proj(o), new_state
