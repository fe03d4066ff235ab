"""The recognised block families, for `edgegate models --recognised` and the README table."""

from __future__ import annotations

from typing import Any

from edgegate.recognise.recurrences import RECURRENCE_RECOGNISERS
from edgegate.recognise.registry import recognisers

_GATE_KEYS = {
    "squeeze_excitation": "SE block classes (edgegate, torchvision, timm) or global pool -> "
    "layers -> sigmoid/hard-sigmoid -> mul",
    "attention_softmax": "softmax feeding a matmul; edgegate's clipped softmax",
    "elementwise_gate": "sigmoid/hard-sigmoid output multiplying a tensor (e.g. Qwen3-Next's "
    "gated-attention output gate)",
    "gate": "edgegate's Gate module",
}


def recognised_families() -> list[dict[str, Any]]:
    """One row per family: what it is keyed by and what it becomes."""
    rows: list[dict[str, Any]] = [
        {
            "family": r.family,
            "kind": "recurrence",
            "keyed_by": f"forward calls {r.keyed_by}",
            "becomes": f"{r.op} op",
            "details": f"one {r.op} op per block (scan lowering in ORT, plugin in TensorRT, "
            "loop-free form in Core ML and ExecuTorch)",
            "models": list(r.families),
        }
        for r in RECURRENCE_RECOGNISERS
    ]
    rows += [
        {
            "family": r.family,
            "kind": "gate",
            "keyed_by": _GATE_KEYS.get(r.family, ", ".join(r.module_classes)),
            "becomes": "fixed [0, 1] INT8",
            "details": r.becomes,
            "models": [],
        }
        for r in recognisers()
    ]
    return rows
