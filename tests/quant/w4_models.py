"""Seeded W4-prepared models shared by the W4 lowering tests (ExecuTorch and Core ML)."""

from __future__ import annotations

import torch
from torch import nn

from edgegate.quant.weight_only import W4Linear


def prepare_w4(
    model: nn.Module, group_size: int = 32, *, skip: tuple[str, ...] = ("gk_proj",)
) -> nn.Module:
    """``model`` with every nn.Linear whose input features ``group_size`` divides replaced by a
    round-to-nearest W4Linear, except those under a name containing one of ``skip`` (the
    GLA decay projection, which W4 keeps in float)."""
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            full = f"{parent_name}.{name}" if parent_name else name
            if (
                isinstance(child, nn.Linear)
                and child.in_features % group_size == 0
                and not any(word in full for word in skip)
            ):
                setattr(parent, name, W4Linear.from_linear(child, group_size))
    return model


class ParallelW4(nn.Module):
    """Three W4Linears read the same input (no W4 output feeds another: one activation
    quantization per layer, so a lowered program can be held to a tight tolerance): group
    sizes 32 and 64, and one group spanning all 128 input features; one without bias."""

    def __init__(self, features: int = 128, symmetric: bool = True, group: int = 32) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = W4Linear.from_linear(nn.Linear(features, 40), group, symmetric=symmetric)
        self.b = W4Linear.from_linear(nn.Linear(features, 24, bias=False), 64, symmetric=symmetric)
        self.c = W4Linear.from_linear(nn.Linear(features, 8), features, symmetric=symmetric)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.a(x), self.b(x), torch.relu(self.c(x))], dim=-1)


class ChainedW4(nn.Module):
    """W4Linear -> GELU -> float Linear -> W4Linear: a block as an LM's MLP has it, with one
    layer that stays float."""

    def __init__(self, features: int = 64, hidden: int = 128) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.up = W4Linear.from_linear(nn.Linear(features, hidden), 32)
        self.mid = nn.Linear(hidden, hidden)
        self.down = W4Linear.from_linear(nn.Linear(hidden, features), 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(self.mid(torch.nn.functional.gelu(self.up(x))))
