"""Reference clipped softmax (Bondarenko et al. 2023): lets a head output exact zeros."""

from __future__ import annotations

import torch


def naive_clipped_softmax(
    x: torch.Tensor, gamma: float, zeta: float = 1.0, dim: int = -1
) -> torch.Tensor:
    """clip((zeta - gamma) * softmax(x) + gamma, 0, 1)."""
    return torch.clamp((zeta - gamma) * torch.softmax(x, dim=dim) + gamma, 0.0, 1.0)
