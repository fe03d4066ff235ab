"""Gated Linear Attention token mixer (Yang et al. 2024), built on `gated_linear_attention`."""

from __future__ import annotations

import torch
from torch import nn

from edgegate.models.blocks.gate import Gate
from edgegate.models.blocks.scans import GLAScan


class GLAMixer(nn.Module):
    """x [B,T,dim] (+ state [B,H,K,V]) -> (y [B,T,dim], final state).

    The key-wise decay is gk = logsigmoid(W x) / 16 with a low-rank W (as in fla), so decays
    stay near 1 and the state keeps a long memory. The read-out is normalised per head and
    multiplied by a sigmoid output gate (a `Gate`, so its [0, 1] range is known; fla uses a
    swish gate here).
    """

    def __init__(
        self,
        dim: int,
        heads: int = 4,
        expand_k: float = 0.5,
        expand_v: float = 1.0,
        gate_rank: int = 16,
        gate_normalizer: float = 16.0,
    ) -> None:
        super().__init__()
        key_dim, value_dim = int(dim * expand_k), int(dim * expand_v)
        if key_dim % heads or value_dim % heads:
            raise ValueError(f"key/value dims {key_dim}/{value_dim} not divisible by {heads}")
        self.heads, self.head_k, self.head_v = heads, key_dim // heads, value_dim // heads
        self.gate_normalizer = float(gate_normalizer)
        self.q_proj = nn.Linear(dim, key_dim, bias=False)
        self.k_proj = nn.Linear(dim, key_dim, bias=False)
        self.v_proj = nn.Linear(dim, value_dim, bias=False)
        self.gk_proj = nn.Sequential(
            nn.Linear(dim, gate_rank, bias=False), nn.Linear(gate_rank, key_dim)
        )
        self.gk_act = nn.LogSigmoid()
        self.scan = GLAScan()
        self.norm = nn.LayerNorm(self.head_v)
        self.g_proj = nn.Linear(dim, value_dim)
        self.out_gate = Gate("sigmoid")
        self.o_proj = nn.Linear(value_dim, dim, bias=False)

    def state_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, self.heads, self.head_k, self.head_v)

    def init_state(self, batch: int, device: torch.device | str | None = None) -> torch.Tensor:
        return torch.zeros(self.state_shape(batch), device=device)

    def forward(
        self, x: torch.Tensor, state: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hk = (self.heads, self.head_k)
        q = self.q_proj(x).unflatten(-1, hk)
        k = self.k_proj(x).unflatten(-1, hk)
        v = self.v_proj(x).unflatten(-1, (self.heads, self.head_v))
        gk = (self.gk_act(self.gk_proj(x)) / self.gate_normalizer).unflatten(-1, hk)
        o, new_state = self.scan(q, k, v, gk, state)
        o = self.norm(o).flatten(2) * self.out_gate(self.g_proj(x))
        return self.o_proj(o), new_state
