"""Multi-head self-attention with the outlier-free variants of Bondarenko et al. (2023).

Variants:
- "softmax": plain attention.
- "clipped": clipped softmax, clip((zeta - gamma) * softmax + gamma, 0, 1), so a head can
  put exact zeros on tokens (no huge logits needed to "do nothing"). The zoo models use the
  paper's gamma = -alpha / T with alpha = 2 (T = token count: 17 for qvit, 128 for qlm) and
  zeta = 1; `Attention` itself defaults to a fixed gamma = -0.03.
- "gated": sigmoid(G(x)) * softmax(QK^T/sqrt(d)) V, one gate per head and token, applied
  right after the attention output and before the output projection; G is a Linear from
  d_head to 1 on that head's slice of the (pre-normed) input, bias init logit(pi_init).

Attention is written as explicit matmul + softmax module (no fused SDPA) so quantizers can
place observers on every tensor and the softmax / gate outputs are modules with a known
[0, 1] range.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from edgegate.models.blocks.gate import Gate
from edgegate.ops import clipped_softmax

AttentionVariant = Literal["softmax", "clipped", "gated"]
ATTENTION_VARIANTS: tuple[str, ...] = ("softmax", "clipped", "gated")


def default_gamma(num_tokens: int, alpha: float = 2.0) -> float:
    """The paper's recommended clipped-softmax gamma: -alpha / T (alpha in [2, 4])."""
    return -alpha / num_tokens


class ClippedSoftmax(nn.Module):
    """clip((zeta - gamma) * softmax(x) + gamma, 0, 1): output in [0, 1], exact zeros possible."""

    def __init__(self, gamma: float, zeta: float = 1.0, dim: int = -1) -> None:
        super().__init__()
        if gamma > 0 or zeta < 1:
            raise ValueError(f"clipped softmax needs gamma <= 0 and zeta >= 1, got {gamma}, {zeta}")
        self.gamma = float(gamma)
        self.zeta = float(zeta)
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return clipped_softmax(x, self.gamma, self.zeta, self.dim)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, zeta={self.zeta}, dim={self.dim}"


class HeadwiseGate(nn.Module):
    """One gate per head and token: Linear(d_head -> 1) on each head's input slice, then sigmoid.

    Implemented as a grouped 1x1 Conv1d (groups = heads): a standard, quantizable layer
    that is exactly a separate Linear per head slice.
    """

    def __init__(self, dim: int, heads: int, pi_init: float = 0.5) -> None:
        super().__init__()
        if not 0.0 < pi_init < 1.0:
            raise ValueError(f"pi_init must lie in (0, 1), got {pi_init}")
        self.proj = nn.Conv1d(dim, heads, kernel_size=1, groups=heads)
        nn.init.constant_(self.proj.bias, math.log(pi_init / (1.0 - pi_init)))
        self.gate = Gate("sigmoid")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, T, dim] -> gate [B, heads, T, 1]."""
        return self.gate(self.proj(x.transpose(1, 2))).unsqueeze(-1)


class Attention(nn.Module):
    """Self-attention over x [B, T, dim] -> [B, T, dim]; `causal=True` for language models."""

    def __init__(
        self,
        dim: int,
        heads: int = 4,
        variant: AttentionVariant = "softmax",
        causal: bool = False,
        gamma: float = -0.03,
        zeta: float = 1.0,
        pi_init: float = 0.5,
    ) -> None:
        super().__init__()
        if variant not in ATTENTION_VARIANTS:
            raise ValueError(f"attention variant must be one of {ATTENTION_VARIANTS}")
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.dim, self.heads, self.head_dim = dim, heads, dim // heads
        self.variant = variant
        self.causal = causal
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.softmax: nn.Module = (
            ClippedSoftmax(gamma, zeta) if variant == "clipped" else nn.Softmax(dim=-1)
        )
        self.head_gate: HeadwiseGate | None = (
            HeadwiseGate(dim, heads, pi_init) if variant == "gated" else None
        )
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).unflatten(-1, (3, self.heads, self.head_dim)).permute(2, 0, 3, 1, 4)
        scores = (q * self.scale) @ k.transpose(-2, -1)  # [B, H, T, T]
        if self.causal:
            # built from the scores (not torch.ones(T, T)) so FX tracing and export see no ints
            future = torch.ones_like(scores[0, 0], dtype=torch.bool).triu(1)
            scores = scores.masked_fill(future, float("-inf"))
        out = self.softmax(scores) @ v  # [B, H, T, d_head]
        if self.head_gate is not None:
            out = out * self.head_gate(x)
        return self.proj(out.transpose(1, 2).flatten(2))
