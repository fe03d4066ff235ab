"""A user model with an op of its own: no ExecuTorch kernel, no edgegate decomposition."""

from __future__ import annotations

import torch
from torch import nn


@torch.library.custom_op("edgegate_tests::mystery", mutates_args=())
def mystery(x: torch.Tensor) -> torch.Tensor:
    return x * 2.0


@mystery.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


class WithMystery(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(mystery(self.conv(x)).mean((2, 3)))


def build() -> nn.Module:
    torch.manual_seed(0)
    return WithMystery().eval()
