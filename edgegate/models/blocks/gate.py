"""`Gate`: the marker module for every activation whose output lies in [0, 1] by construction.

The gate-aware quantizer (design.md §4) finds gates by type, not by guessing: every
`Gate` output gets the fixed [0, 1] range, is never calibrated, and represents 0 and 1
exactly. `role="scan"` marks a gate that parameterises a scan op (Gated DeltaNet's beta);
the design keeps those in floating point by default, so the quantizer can skip them.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

GateKind = Literal["sigmoid", "hardsigmoid"]
GateRole = Literal["gate", "scan"]
GATE_KINDS: tuple[str, ...] = ("sigmoid", "hardsigmoid")
GATE_ROLES: tuple[str, ...] = ("gate", "scan")


class Gate(nn.Module):
    """sigmoid or hard-sigmoid (relu6(x+3)/6) as a module, so a quantizer can attach to it."""

    def __init__(self, kind: GateKind = "sigmoid", role: GateRole = "gate") -> None:
        super().__init__()
        if kind not in GATE_KINDS:
            raise ValueError(f"Gate kind must be one of {GATE_KINDS}, got {kind!r}")
        if role not in GATE_ROLES:
            raise ValueError(f"Gate role must be one of {GATE_ROLES}, got {role!r}")
        self.kind: str = kind
        self.role: str = role
        self.act: nn.Module = nn.Sigmoid() if kind == "sigmoid" else nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, role={self.role!r}"
