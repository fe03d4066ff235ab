"""Byte-level causal language models (vocab 256): attention (`qlm`) and gated scans.

The scan LMs (`gla-lm`, `hgrn-lm`, `gdn-lm`) have no position embedding: the recurrence
carries order, so `forward_with_state` over a sequence fed in pieces equals one pass.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from edgegate.errors import BadInput
from edgegate.models.blocks import (
    Attention,
    AttentionBlock,
    GatedDeltaNetMixer,
    GLAMixer,
    HGRNMixer,
    MixerBlock,
    default_gamma,
)

VOCAB = 256


def _init_lm(module: nn.Module) -> None:
    """GPT-2 style small-normal init for embeddings and projections."""
    for m in module.modules():
        if isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class TransformerLM(nn.Module):
    """tokens [B, T] (T <= seq_len) -> logits [B, T, 256]."""

    def __init__(
        self,
        dim: int = 96,
        depth: int = 3,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        seq_len: int = 128,
        attention: Literal["softmax", "clipped", "gated"] = "softmax",
        gamma: float = -0.03,
        zeta: float = 1.0,
        pi_init: float = 0.5,
    ) -> None:
        super().__init__()
        self.seq_len = seq_len
        self.embed = nn.Embedding(VOCAB, dim)
        self.pos_embed = nn.Embedding(seq_len, dim)
        self.blocks = nn.ModuleList(
            AttentionBlock(
                dim, mlp_ratio, Attention(dim, heads, attention, True, gamma, zeta, pi_init)
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, VOCAB, bias=False)
        _init_lm(self)  # Linear/Embedding only: the attention gates (Conv1d) keep logit(pi_init)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.embed(tokens) + self.pos_embed(pos)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


class ScanLM(nn.Module):
    """tokens [B, T] -> logits [B, T, 256], any T; one recurrent state tensor per layer."""

    def __init__(self, mixers: list[nn.Module], dim: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, dim)
        self.blocks = nn.ModuleList(MixerBlock(dim, mlp_ratio, m) for m in mixers)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, VOCAB, bias=False)
        nn.init.normal_(self.embed.weight, 0.0, 0.02)
        nn.init.normal_(self.head.weight, 0.0, 0.02)

    def init_states(
        self, batch: int = 1, device: torch.device | str | None = None
    ) -> tuple[torch.Tensor, ...]:
        """Zero states, one per layer (what `forward` starts from)."""
        return tuple(b.mixer.init_state(batch, device) for b in self.blocks)

    def streaming(self) -> StreamingLM:
        """A module whose forward is `forward_with_state` (shares this LM's weights)."""
        return StreamingLM(self)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        for block in self.blocks:
            x, _ = block(x)
        return self.head(self.norm(x))

    def forward_with_state(
        self, tokens: torch.Tensor, *states: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """(tokens, *states) -> (logits, *new_states); no states = start from zeros."""
        if states and len(states) != len(self.blocks):
            raise BadInput(
                f"forward_with_state: expected {len(self.blocks)} states (one per layer), "
                f"got {len(states)}"
            )
        x = self.embed(tokens)
        new_states = []
        for i, block in enumerate(self.blocks):
            x, s = block(x, states[i] if states else None)
            new_states.append(s)
        return (self.head(self.norm(x)), *new_states)


class StreamingLM(nn.Module):
    """forward(tokens, *states) -> (logits, *new_states): the streaming step as `forward`.

    Export this (not the LM) to get states as explicit graph inputs and outputs.
    """

    def __init__(self, lm: ScanLM) -> None:
        super().__init__()
        self.lm = lm

    def forward(self, tokens: torch.Tensor, *states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.lm.forward_with_state(tokens, *states)


def qlm(
    attention: Literal["softmax", "clipped", "gated"] = "softmax",
    depth: int = 3,
    dim: int = 96,
    heads: int = 4,
    mlp_ratio: float = 4.0,
    seq_len: int = 128,
    alpha: float = 2.0,
    zeta: float = 1.0,
    pi_init: float = 0.5,
) -> TransformerLM:
    """Zoo factory `qlm`. Clipped softmax uses gamma = -alpha / seq_len (-1/64 by default)."""
    gamma = default_gamma(seq_len, alpha)
    return TransformerLM(dim, depth, heads, mlp_ratio, seq_len, attention, gamma, zeta, pi_init)


def gla_lm(
    depth: int = 3, dim: int = 96, heads: int = 4, mlp_ratio: float = 4.0, gate_rank: int = 16
) -> ScanLM:
    """Zoo factory `gla-lm`."""
    mixers = [GLAMixer(dim, heads, gate_rank=gate_rank) for _ in range(depth)]
    return ScanLM(mixers, dim, mlp_ratio)


def gla_lm_25m(
    depth: int = 8, dim: int = 512, heads: int = 4, mlp_ratio: float = 4.0, gate_rank: int = 16
) -> ScanLM:
    """Zoo factory `gla-lm-25m`: `gla-lm` at 25.6 M parameters. Decode speed on a device is
    bound by reading the weights each step, which the 0.4 M zoo LMs never show; 100 MB of
    fp32 weights (50 MB fp16) are too large to ship, so its entry names a training command."""
    return gla_lm(depth, dim, heads, mlp_ratio, gate_rank)


def hgrn_lm(
    depth: int = 3, dim: int = 96, heads: int = 4, mlp_ratio: float = 4.0, lower_bound: float = 0.0
) -> ScanLM:
    """Zoo factory `hgrn-lm`."""
    mixers = [HGRNMixer(dim, heads, lower_bound) for _ in range(depth)]
    return ScanLM(mixers, dim, mlp_ratio)


def gdn_lm(depth: int = 3, dim: int = 96, heads: int = 4, mlp_ratio: float = 4.0) -> ScanLM:
    """Zoo factory `gdn-lm`."""
    mixers = [GatedDeltaNetMixer(dim, heads) for _ in range(depth)]
    return ScanLM(mixers, dim, mlp_ratio)
