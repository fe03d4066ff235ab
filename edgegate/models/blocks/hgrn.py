"""HGRN token mixer (Qin et al. 2023), built on `gated_linear_scan`."""

from __future__ import annotations

import torch
from torch import nn

from edgegate.models.blocks.gate import Gate
from edgegate.models.blocks.scans import LinearScan


class HGRNMixer(nn.Module):
    """x [B,T,dim] (+ state [B,H,dim/H]) -> (y [B,T,dim], final state).

    Elementwise recurrence h_t = f_t * h_{t-1} + (1 - f_t) * i_t with f = sigmoid(z), given to
    the scan as g = log f = logsigmoid(z). `lower_bound` > 0 keeps f >= lower_bound
    (f = lb + (1 - lb) sigmoid(z)), HGRN's guard against forgetting everything. The
    input-side factor 1 - f = (1 - lb) sigmoid(-z) is a `Gate`; the log decay stays float.
    """

    def __init__(self, dim: int, heads: int = 4, lower_bound: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        if not 0.0 <= lower_bound < 1.0:
            raise ValueError(f"lower_bound must lie in [0, 1), got {lower_bound}")
        self.heads, self.head_dim = heads, dim // heads
        self.lower_bound = float(lower_bound)
        self.i_proj = nn.Linear(dim, dim)
        self.f_proj = nn.Linear(dim, dim)
        self.i_act = nn.SiLU()
        self.keep_gate = Gate("sigmoid")
        self.decay_act = nn.LogSigmoid()
        self.scan = LinearScan()
        self.norm = nn.LayerNorm(dim)
        self.g_proj = nn.Linear(dim, dim)
        self.out_gate = Gate("sigmoid")
        self.o_proj = nn.Linear(dim, dim, bias=False)

    def state_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, self.heads, self.head_dim)

    def init_state(self, batch: int, device: torch.device | str | None = None) -> torch.Tensor:
        return torch.zeros(self.state_shape(batch), device=device)

    def _log_decay(self, z: torch.Tensor) -> torch.Tensor:
        lb = self.lower_bound
        if lb == 0.0:  # config, not data: logsigmoid is exact and never hits log(0)
            return self.decay_act(z)
        return torch.log(lb + (1.0 - lb) * torch.sigmoid(z))

    def forward(
        self, x: torch.Tensor, state: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hd = (self.heads, self.head_dim)
        z = self.f_proj(x)
        keep = self.keep_gate(-z)
        if self.lower_bound != 0.0:
            keep = keep * (1.0 - self.lower_bound)
        inp = (self.i_act(self.i_proj(x)) * keep).unflatten(-1, hd)
        h, new_state = self.scan(inp, self._log_decay(z).unflatten(-1, hd), state)
        o = self.norm(h.flatten(2)) * self.out_gate(self.g_proj(x))
        return self.o_proj(o), new_state
