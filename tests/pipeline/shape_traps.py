"""User models whose export runs at the traced shape and breaks elsewhere (loaded as
``tests.pipeline.shape_traps:<factory>`` with --trust-code).

- ``chunk_lm``: a decaying recurrence computed by a Python loop over chunks of T, as
  hand-written scans (and transformers' chunked fallbacks) are: tracing unrolls the loop for
  the traced length, so the graph refuses shorter sequences and is wrong on longer ones.
- ``batch_cnn``: flattens with the batch read as a Python int, so the traced batch becomes a
  constant of the graph.
- ``plain_lm``: the same recurrence written without a loop (cumsum), right at every length;
  ``plain_cnn``: a CNN right at every batch and side.
"""

from __future__ import annotations

import torch
from torch import nn

CHUNK = 16
DECAY = 0.98  # 0.98^-256 stays well inside float32


class ChunkLoopLM(nn.Module):
    """tokens [B, T] -> logits [B, T, 256]: h_t = DECAY * h_{t-1} + x_t, chunk by chunk."""

    def __init__(self, dim: int = 16, loop: bool = True) -> None:
        super().__init__()
        self.embed = nn.Embedding(256, dim)
        self.head = nn.Linear(dim, 256)
        self.loop = loop

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        if not self.loop:
            return self.head(_decayed_sum(x))
        state = torch.zeros(x.shape[0], x.shape[2])
        outs = []
        for start in range(0, x.shape[1], CHUNK):
            piece = _decayed_sum(x[:, start : start + CHUNK])
            steps = torch.arange(1, piece.shape[1] + 1, dtype=x.dtype)
            piece = piece + state[:, None] * (DECAY**steps)[None, :, None]
            outs.append(piece)
            state = piece[:, -1]
        return self.head(torch.cat(outs, 1))


def _decayed_sum(x: torch.Tensor) -> torch.Tensor:
    """sum_{s<=t} DECAY^(t-s) x_s along dim 1, without a loop."""
    steps = torch.arange(x.shape[1], dtype=x.dtype)
    scale = (DECAY**steps)[None, :, None]
    return torch.cumsum(x / scale, 1) * scale


class BatchReshapeCNN(nn.Module):
    """images [B, 3, H, W] -> logits [B, 10]; the flatten reads the batch as a Python int."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pooled = self.conv(images).relu().mean((2, 3))
        batch = int(pooled.shape[0])
        return self.fc(pooled.reshape(batch, 8))


class PlainCNN(nn.Module):
    """A CNN right at every batch and side (the control)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(images).relu().mean((2, 3)))


def plain_cnn() -> nn.Module:
    torch.manual_seed(0)
    return PlainCNN()


def chunk_lm() -> nn.Module:
    torch.manual_seed(0)
    return ChunkLoopLM()


def plain_lm() -> nn.Module:
    torch.manual_seed(0)
    return ChunkLoopLM(loop=False)


def batch_cnn() -> nn.Module:
    torch.manual_seed(0)
    return BatchReshapeCNN()
