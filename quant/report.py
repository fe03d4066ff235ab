"""Per-layer quantization report: SQNR of every quantized layer beside its outlier statistics.

Outlier statistics (``edgegate.quant.outliers``) predict which layers will quantize badly;
SQNR measures how badly they did, so the two side by side show whether a flagged layer
actually hurts and which unflagged layer hurts anyway. Written as JSON (for tools),
Markdown (for people and CI summaries) and a PNG bar chart (for a glance at 60 layers).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from brevitas.nn import QuantConv1d, QuantConv2d, QuantLinear
from torch import nn

from edgegate.atomic import atomic_write, save_png
from edgegate.errors import BadInput
from edgegate.jsonio import write_json
from edgegate.quant.batch_norm import fold_sites
from edgegate.quant.exported import is_exported, plain_graph_module
from edgegate.quant.graph import trace
from edgegate.quant.outliers import LayerStats, activation_stats

Batch = tuple[torch.Tensor, ...]
Row = dict[str, Any]

QUANT_LAYER_TYPES = (QuantConv1d, QuantConv2d, QuantLinear)
# 20 dB = error power 1 % of signal; clean W8A8 layers measure ~30-40 dB, so below 20 is a loss.
SQNR_LIMIT_DB = 20.0
# Reported for zero error (and, negated, for error on an all-zero signal): finite, so JSON,
# sorting and plotting need no special case; no real 8-bit layer comes near it.
SQNR_CEILING_DB = 200.0
LOW_SQNR_SUGGESTION = "low SQNR: keep this layer in float or try --method mse"
ROW_KEYS = (
    "name",
    "kind",
    "max_abs",
    "kurtosis",
    "weight_min",
    "weight_max",
    "sqnr_db",
    "quantized",
    "flagged",
    "suggestion",
)


def sqnr_db(signal: float, noise: float) -> float:
    """10 log10(signal / noise), clamped to +-SQNR_CEILING_DB so it is always finite."""
    if noise <= 0.0:
        return SQNR_CEILING_DB
    if signal <= 0.0:
        return -SQNR_CEILING_DB
    return max(-SQNR_CEILING_DB, min(SQNR_CEILING_DB, 10.0 * math.log10(signal / noise)))


def _as_tensor(out: Any) -> torch.Tensor:
    """A layer's output as a plain tensor: brevitas may return a QuantTensor (``.value``)."""
    if isinstance(out, tuple):
        out = out[0]
    return getattr(out, "value", out)


def _folded_into(float_model: nn.Module) -> dict[str, str | None]:
    """Conv name -> name of the BatchNorm that ``quantize_model`` folds into it.

    The quantized conv computes conv + BN, so its float reference is the BN's output; a BN
    run as a function inside a larger block (norm + activation) has no module of its own
    whose output is that reference (None). Uses the rule ``batch_norm.fold_batch_norm``
    folds by; an untraceable model folds nothing.
    """
    try:
        graph_module = trace(float_model)
    except BadInput:
        return {}
    return {
        str(site.conv.target): str(site.bn.target) if site.bn.op == "call_module" else None
        for site in fold_sites(graph_module)
    }


def _reference_modules(float_model: nn.Module, quant_model: nn.Module) -> dict[str, nn.Module]:
    """Quantized layer name -> the float module whose output that layer should reproduce."""
    float_modules = dict(float_model.named_modules())
    folded = _folded_into(float_model)
    references = {}
    for name, module in quant_model.named_modules():
        if isinstance(module, QUANT_LAYER_TYPES) and name in float_modules:
            reference = folded.get(name, name)
            if reference is not None:  # no float module computes conv + functional BN alone
                references[name] = float_modules[reference]
    return references


@torch.no_grad()
def layer_sqnr(
    float_model: nn.Module, quant_model: nn.Module, batches: Iterable[Batch]
) -> dict[str, float]:
    """SQNR (dB) of each quantized layer's output against the float model's same-named layer.

    Both models see the same inputs, so the error is accumulated: a layer's SQNR includes
    what earlier layers lost, which is what the deployed model will see. Summed over all
    batches (energy-weighted), run batch by batch so only one batch's outputs are held.
    Names without a float counterpart are skipped; zero error gives SQNR_CEILING_DB.
    """
    references = _reference_modules(float_model, quant_model)
    quant_layers = dict(quant_model.named_modules())
    captured: dict[str, list[torch.Tensor]] = {name: [] for name in references}
    energy = {name: [0.0, 0.0] for name in references}  # [signal, noise]

    def keep(name: str):
        return lambda _m, _i, out: captured[name].append(_as_tensor(out).detach().double())

    def compare(name: str):
        def hook(_m: nn.Module, _i: Any, out: Any) -> None:
            if not captured[name]:
                return  # called more often than its float twin: nothing to compare with
            ref = captured[name].pop(0)
            err = ref - _as_tensor(out).detach().double()
            energy[name][0] += float((ref**2).sum())
            energy[name][1] += float((err**2).sum())

        return hook

    handles = [module.register_forward_hook(keep(name)) for name, module in references.items()]
    handles += [quant_layers[name].register_forward_hook(compare(name)) for name in references]
    try:
        float_model.eval()
        quant_model.eval()
        for batch in batches:
            float_model(*batch)
            quant_model(*batch)
            for outputs in captured.values():
                outputs.clear()
    finally:
        for handle in handles:
            handle.remove()
    return {name: sqnr_db(signal, noise) for name, (signal, noise) in energy.items()}


def _weight_range(module: nn.Module) -> tuple[float | None, float | None]:
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor):
        return None, None
    weight = weight.detach()
    return float(weight.min()), float(weight.max())


def _row(name: str, module: nn.Module, stats: LayerStats | None, sqnr: float | None) -> Row:
    """One report row; a quantized layer activation_stats does not cover keeps None stats."""
    weight_min, weight_max = (
        (stats.weight_min, stats.weight_max) if stats is not None else _weight_range(module)
    )
    suggestion = (stats.suggestion if stats is not None else "") or None
    low_sqnr = sqnr is not None and sqnr < SQNR_LIMIT_DB
    if low_sqnr and not (suggestion and "attention" in suggestion):
        suggestion = f"{suggestion}; {LOW_SQNR_SUGGESTION}" if suggestion else LOW_SQNR_SUGGESTION
    return {
        "name": name,
        "kind": stats.kind if stats is not None else type(module).__name__,
        "max_abs": stats.max_abs if stats is not None else None,
        "kurtosis": stats.kurtosis if stats is not None else None,
        "weight_min": weight_min,
        "weight_max": weight_max,
        "sqnr_db": sqnr,
        "quantized": sqnr is not None,
        "flagged": bool(stats is not None and stats.flagged) or low_sqnr,
        "suggestion": suggestion,
    }


def quantizability_report(
    float_model: nn.Module, quant_model: nn.Module, batches: Iterable[Batch]
) -> list[Row]:
    """Outlier statistics and SQNR per layer, in model order, one row per layer.

    Rows cover every layer ``activation_stats`` reports plus every quantized layer it does
    not (Conv1d). ``sqnr_db`` is None for layers left in float (e.g. scan feeders).
    """
    batches = list(batches)  # walked twice
    if is_exported(float_model):  # a .pt2's layers are aten calls: compare its plain graph's
        float_model = plain_graph_module(float_model)  # modules, named as the quantized ones
    stats = {entry.name: entry for entry in activation_stats(float_model, batches)}
    sqnr = layer_sqnr(float_model, quant_model, batches)
    return [
        _row(name, module, stats.get(name), sqnr.get(name))
        for name, module in float_model.named_modules()
        if name in stats or name in sqnr
    ]


def _fmt(value: float | None, spec: str = ".3g") -> str:
    return "-" if value is None else format(value, spec)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _layer_line(row: Row) -> str:
    weight_range = (
        "-"
        if row["weight_min"] is None
        else f"[{_fmt(row['weight_min'])}, {_fmt(row['weight_max'])}]"
    )
    flag = _cell(row["suggestion"] or "yes") if row["flagged"] else ""
    cells = [
        f"`{_cell(row['name'])}`",
        str(row["kind"] or "-"),
        _fmt(row["max_abs"]),
        _fmt(row["kurtosis"]),
        weight_range,
        _fmt(row["sqnr_db"], ".1f"),
        flag,
    ]
    return "| " + " | ".join(cells) + " |"


def _gate_lines(gates: dict[str, Any]) -> list[str]:
    """The recognised gates (path, family, how matched, flips) and what was left out."""
    lines = ["", "## Gates", "", "| block | family | kind | matched by | flip % | quantizer |"]
    lines.append("|---|---|---|---|---:|---|")
    for gate in gates["recognised"]:
        flip = gate.get("flip_rate")
        cells = [
            f"`{_cell(gate['path'] or '<root>')}`",
            gate["family"],
            gate["kind"],
            _cell(gate["matched_by"]),
            "-" if flip is None else f"{flip:.2f}",
            "fixed [0, 1]" if gate.get("quantizer") else "none (weight-only)",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    for title, key in (("Unrecognised (warned)", "unrecognised"), ("Left float", "left_float")):
        if gates.get(key):
            lines += ["", f"{title}:", ""]
            lines += [
                f"- `{item['path'] or '<root>'}` ({item['what']}): {item['reason']}"
                for item in gates[key]
            ]
    return lines


def render_markdown(
    rows: Sequence[Row], summary: dict[str, Any], gates: dict[str, Any] | None = None
) -> str:
    """The report as Markdown: summary key/value table, the gates, one table row per layer."""
    lines = ["# Quantization report", "", "## Summary", "", "| | |", "|---|---|"]
    lines += [f"| {_cell(str(k))} | {_cell(str(v))} |" for k, v in summary.items()]
    if gates is not None:
        lines += _gate_lines(gates)
    lines += ["", f"## Layers (SQNR limit {SQNR_LIMIT_DB:g} dB)", ""]
    lines += [
        "| layer | kind | max abs | kurtosis | weight range | SQNR dB | flag |",
        "|---|---|---:|---:|---|---:|---|",
    ]
    lines += [_layer_line(row) for row in rows]
    return "\n".join(lines) + "\n"


def plot_sqnr(rows: Sequence[Row], path: str | Path) -> Path:
    """Horizontal SQNR bars per quantized layer; flagged layers in red, the limit dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    quantized = [row for row in rows if row["sqnr_db"] is not None]
    height = max(2.5, 0.22 * len(quantized) + 1.2)  # ~0.22 in per bar keeps 60 labels legible
    fig, ax = plt.subplots(figsize=(7.5, height))
    positions = range(len(quantized))
    ax.barh(
        list(positions),
        [row["sqnr_db"] for row in quantized],
        color=["tab:red" if row["flagged"] else "tab:blue" for row in quantized],
    )
    ax.set_yticks(list(positions), [row["name"] for row in quantized], fontsize=7)
    ax.margins(y=0.01)
    ax.invert_yaxis()  # model order, top to bottom
    ax.axvline(SQNR_LIMIT_DB, color="gray", linestyle="--", label=f"{SQNR_LIMIT_DB:g} dB limit")
    ax.set_xlabel("SQNR (dB), accumulated")
    ax.set_title(f"SQNR per quantized layer ({len(quantized)} layers)")
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    return save_png(fig, path)


def write_quant_report(
    rows: Sequence[Row],
    directory: str | Path,
    summary: dict[str, Any],
    gates: dict[str, Any] | None = None,
) -> list[Path]:
    """Write quant_report.{json,md,png} into ``directory`` (each atomically); return their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    content: dict[str, Any] = {"summary": summary, "layers": rows}
    if gates is not None:
        content["gates"] = gates
    json_path = write_json(directory / "quant_report.json", content)
    md_path = directory / "quant_report.md"
    with atomic_write(md_path, "w") as fh:
        fh.write(render_markdown(rows, summary, gates))
    png_path = plot_sqnr(rows, directory / "quant_report.png")
    return [json_path, md_path, png_path]
