"""Pre-norm residual blocks: attention + MLP (ViT, qlm) and scan mixer + MLP (scan LMs)."""

from __future__ import annotations

import torch
from torch import nn

from edgegate.models.blocks.attention import Attention
from edgegate.models.blocks.common import MLP


class AttentionBlock(nn.Module):
    """x + attn(ln(x)), then x + mlp(ln(x)); the attention gate sees the pre-normed x."""

    def __init__(self, dim: int, mlp_ratio: float, attention: Attention) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = attention
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class MixerBlock(nn.Module):
    """Same shell with a stateful token mixer: (x, state) -> (x, new state)."""

    def __init__(self, dim: int, mlp_ratio: float, mixer: nn.Module) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.mixer = mixer
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, int(dim * mlp_ratio))

    def forward(
        self, x: torch.Tensor, state: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        y, new_state = self.mixer(self.norm1(x), state)
        x = x + y
        return x + self.mlp(self.norm2(x)), new_state
