"""The gate-flip check: does each recognised gate still decide as the float model's does?

A gate's job is a decision per channel or element (pass, scale down, close), so the error that
matters is a gate landing on the other side of 1/2 from its float value, not its rounding to
the 1/255 grid. Float values within 0.1 of 1/2 decide nothing (a trained SE block holds many
around 0.5, which any upstream rounding moves across) and do not count. Float values
come from the float model's own graph (same tracer, so the same node names); fake-quant
values from the gate quantizers' outputs, on the same inputs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import fx, nn

UNDECIDED_BAND = 0.1  # |float gate - 1/2| at most this: no decision to flip
FLIP_WARN_PERCENT = 1.0  # a gate flipping more often than this changes what the model does
MAX_SAMPLES = 32  # enough values per gate (channels x samples); the Interpreter is slow


class _Capture(fx.Interpreter):
    def __init__(self, module: fx.GraphModule, wanted: set[str]) -> None:
        super().__init__(module)
        self.wanted, self.values = wanted, {}

    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        if n.name in self.wanted:
            self.values[n.name] = result.detach()
        return result


@torch.no_grad()
def gate_flips(
    float_graph: fx.GraphModule,
    quant_model: nn.Module,
    gates: list[dict[str, Any]],
    batches: Iterable[tuple[torch.Tensor, ...]],
) -> list[dict[str, Any]]:
    """Per recognised gate (records of ``quant_model.gate_record``): percent of decisive gate
    values that flip and the largest absolute change, float graph vs fake-quant model."""
    checked = [g for g in gates if g.get("quantizer")]
    if not checked:
        return []
    quantizers = dict(quant_model.named_modules())
    captured: dict[str, list[torch.Tensor]] = {g["quantizer"]: [] for g in checked}
    hooks = [
        quantizers[name].register_forward_hook(
            lambda _m, _i, out, name=name: captured[name].append(out.detach())
        )
        for name in captured
    ]
    totals = {g["node"]: [0, 0, 0.0] for g in checked}  # flips, decisive values, max abs
    seen = 0
    try:
        for batch in batches:
            if seen >= MAX_SAMPLES:
                break
            batch = tuple(t[: MAX_SAMPLES - seen] for t in batch)
            seen += len(batch[0])
            capture = _Capture(float_graph, set(totals))
            capture.run(*batch)
            quant_model(*batch)
            for gate in checked:
                reference = capture.values[gate["node"]].float()
                candidate = captured[gate["quantizer"]].pop().float()
                decisive = (reference - 0.5).abs() > UNDECIDED_BAND
                flipped = (reference >= 0.5) != (candidate >= 0.5)
                total = totals[gate["node"]]
                total[0] += int((flipped & decisive).sum())
                total[1] += int(decisive.sum())
                total[2] = max(total[2], float((reference - candidate).abs().max()))
    finally:
        for hook in hooks:
            hook.remove()
    results = []
    for gate in checked:
        flips, decisive, max_abs = totals[gate["node"]]
        rate = round(100.0 * flips / decisive, 4) if decisive else 0.0
        results.append(
            {"path": gate["path"], "flip_rate": rate, "max_abs_error": round(max_abs, 6)}
        )
    return results


def gate_summary(
    float_graph: fx.GraphModule | None,
    quant_model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, ...]] | None,
) -> dict[str, Any] | None:
    """``quant_model``'s gate record with each gate's flip figures (when ``float_graph`` and
    ``batches`` are given), plus the largest flip rate; None for a model with no record."""
    record = getattr(quant_model, "gate_record", None)
    if record is None:
        return None
    recognised = [dict(gate) for gate in record["recognised"]]
    if float_graph is not None and batches is not None:
        flips = gate_flips(float_graph, quant_model, recognised, batches)
        by_path = iter(flips)
        for gate in recognised:
            if gate.get("quantizer"):
                gate.update(next(by_path))
    rates = [gate["flip_rate"] for gate in recognised if "flip_rate" in gate]
    return {
        **record,
        "recognised": recognised,
        "max_flip_rate": max(rates) if rates else None,
    }


def gate_warnings(summary: dict[str, Any] | None) -> list[str]:
    """One line per gate-like op left unrecognised and per gate that flips too often."""
    if summary is None:
        return []
    lines = [
        f"gate-like {item['what']} at {item['path'] or '<root>'} left unrecognised, so "
        f"calibrated like any activation: {item['reason']}"
        for item in summary["unrecognised"]
    ]
    lines += [
        f"gate {gate['path'] or '<root>'} flips on {gate['flip_rate']:g} % of its decisive values "
        f"(fake-quant vs float)"
        for gate in summary["recognised"]
        if gate.get("flip_rate", 0.0) > FLIP_WARN_PERCENT
    ]
    return lines
