"""`qvit`: a small ViT with the quantization-friendly attention variants of Bondarenko et al.

Default input 3x16x16 (digits upsampled), patch 4 -> 16 tokens + a class token.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from edgegate.models.blocks import Attention, AttentionBlock, default_gamma


class ViT(nn.Module):
    """images [B, C, S, S] -> logits [B, num_classes]; S must equal `image_size`."""

    def __init__(
        self,
        image_size: int = 16,
        patch: int = 4,
        in_channels: int = 3,
        num_classes: int = 10,
        dim: int = 64,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        attention: Literal["softmax", "clipped", "gated"] = "softmax",
        gamma: float = -0.03,
        zeta: float = 1.0,
        pi_init: float = 0.5,
    ) -> None:
        super().__init__()
        if image_size % patch:
            raise ValueError(f"image_size {image_size} is not a multiple of patch {patch}")
        tokens = (image_size // patch) ** 2 + 1
        self.image_size = image_size
        self.patch_embed = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        self.blocks = nn.ModuleList(
            AttentionBlock(
                dim, mlp_ratio, Attention(dim, heads, attention, False, gamma, zeta, pi_init)
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # [B, N, dim]
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, 0]))


def qvit(
    attention: Literal["softmax", "clipped", "gated"] = "softmax",
    depth: int = 4,
    dim: int = 64,
    heads: int = 4,
    mlp_ratio: float = 2.0,
    image_size: int = 16,
    patch: int = 4,
    in_channels: int = 3,
    num_classes: int = 10,
    alpha: float = 2.0,
    zeta: float = 1.0,
    pi_init: float = 0.5,
) -> ViT:
    """Zoo factory `qvit`. Clipped softmax uses gamma = -alpha / T, T = patches + 1 (17)."""
    tokens = (image_size // patch) ** 2 + 1
    return ViT(
        image_size,
        patch,
        in_channels,
        num_classes,
        dim,
        depth,
        heads,
        mlp_ratio,
        attention,
        default_gamma(tokens, alpha),
        zeta,
        pi_init,
    )
