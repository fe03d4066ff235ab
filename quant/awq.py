"""Activation-aware weight scaling (AWQ-style) before W4 rounding, folded exactly.

A linear's output is unchanged when its input channel j is divided by s_j and its weight
column j multiplied by s_j. Scaling up the columns that meet large activations gives them
finer 4-bit steps relative to their weight, where rounding error costs most. s = mean|x|^alpha
per input channel, alpha searched on calibration activations for the smallest output error
after W4 rounding (alpha = 0, no scaling, is in the grid).

The division by s is folded into the op that produces the input, only where that is exact:
- a LayerNorm with affine parameters (weight and bias divided by s) whose every consumer is
  a linear layer;
- a linear layer whose output feeds only linear layers (its rows and bias divided by s).
All consumers of the scaled tensor take the column scaling (kept layers too, which are then
stored from the scaled float weight). Layers with no such producer (after an activation, a
product, a reshape) are left unscaled and listed with the reason.

brevitas 0.13.4 has no AWQ: its activation equalization is SmoothQuant's closed form
(max|x|^alpha / max|w|^(1-alpha) at one fixed alpha) with no search against the quantized
weight's output error, and its GPTQ works on brevitas' own quantized layers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import fx, nn

from edgegate.quant.graph import trace
from edgegate.quant.groups import dequantize_groups, quantize_groups
from edgegate.recognise.graph import plain_layer

if TYPE_CHECKING:
    from edgegate.quant.w4_config import W4Config
    from edgegate.quant.w4_select import W4Plan


@dataclass(frozen=True)
class ScaleGroup:
    """Linears reading one tensor, and the op producing it that absorbs 1/s."""

    producer: str
    kind: str  # "layernorm" or "linear"
    consumers: tuple[str, ...]


def _plain_linear(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    return node.op == "call_module" and plain_layer(modules.get(node.target)) is nn.Linear


def _absorbs(module: nn.Module) -> str | None:
    """What kind of producer ``module`` is, if it can take a per-channel 1/s exactly."""
    if type(module) is nn.LayerNorm and module.weight is not None:
        return "layernorm"
    if plain_layer(module) is nn.Linear:
        return "linear"
    return None


def scale_groups(model: nn.Module, plan: W4Plan) -> tuple[list[ScaleGroup], list[dict]]:
    """The foldable groups holding a W4 layer, and the W4 layers no group covers (why)."""
    graph_module = trace(model)
    modules = dict(graph_module.named_modules())
    calls: dict[str, int] = {}
    for node in graph_module.graph.nodes:
        if node.op == "call_module":
            calls[str(node.target)] = calls.get(str(node.target), 0) + 1
    groups: list[ScaleGroup] = []
    covered: set[str] = set()
    for node in graph_module.graph.nodes:
        if node.op != "call_module" or calls[str(node.target)] != 1:
            continue
        kind = _absorbs(modules[node.target])
        users = list(node.users)
        if kind is None or not users or not all(_plain_linear(u, modules) for u in users):
            continue
        consumers = tuple(str(u.target) for u in users)
        if any(calls[c] != 1 for c in consumers) or not set(consumers) & set(plan.quantized):
            continue
        if any(u.args[0] is not node for u in users):
            continue
        groups.append(ScaleGroup(str(node.target), kind, consumers))
        covered.update(consumers)
    skipped = []
    for node in graph_module.graph.nodes:
        name = str(node.target)
        if node.op == "call_module" and name in plan.quantized and name not in covered:
            source = node.args[0]
            what = source.target if isinstance(source, fx.Node) else source
            label = getattr(what, "__name__", str(what))
            skipped.append(
                {
                    "layer": name,
                    "why": f"its input comes from '{label}', which cannot absorb "
                    "a per-channel scale exactly",
                }  # fmt: skip
            )
    return groups, skipped


def _collect(
    model: nn.Module, names: list[str], batches: list[tuple[torch.Tensor, ...]], rows: int
) -> dict[str, torch.Tensor]:
    """Up to ``rows`` output rows ([N, C]) of each named module over the calibration batches."""
    seen: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    counts = dict.fromkeys(names, 0)

    def hook(name: str):
        def record(_module, _inputs, output):
            if counts[name] < rows:
                flat = output.detach().float().reshape(-1, output.shape[-1])
                seen[name].append(flat[: rows - counts[name]])
                counts[name] += len(seen[name][-1])

        return record

    handles = [model.get_submodule(n).register_forward_hook(hook(n)) for n in names]
    try:
        with torch.no_grad():
            for batch in batches:
                model(*batch)
                if all(count >= rows for count in counts.values()):
                    break
    finally:
        for handle in handles:
            handle.remove()
    return {name: torch.cat(parts) for name, parts in seen.items() if parts}


def _scales(mean_abs: torch.Tensor, alpha: float) -> torch.Tensor:
    """mean|x|^alpha, centred so that max * min = 1 (the scale's overall size is free)."""
    s = mean_abs.clamp(min=1e-6).pow(alpha)
    return s / math.sqrt(float(s.max() * s.min()))


def _error(x: torch.Tensor, weights: list[torch.Tensor], s: torch.Tensor, config) -> float:
    """Output error of the group's W4 layers with input scaling ``s``, summed over layers."""
    total = 0.0
    xs = x / s
    for w in weights:
        codes, scales, zero_points = quantize_groups(w * s, config.group_size, config.symmetric)
        q = dequantize_groups(codes, scales, zero_points, config.group_size)
        total += float((xs @ q.T - x @ w.T).pow(2).sum())
    return total


def apply_awq(
    model: nn.Module,
    plan: W4Plan,
    config: W4Config,
    batches: list[tuple[torch.Tensor, ...]],
) -> dict[str, Any]:
    """Search and fold the scales into ``model`` (in place); returns what was done."""
    groups, skipped = scale_groups(model, plan)
    if not groups:
        return {"applied": [], "skipped": skipped}
    activations = _collect(model, [g.producer for g in groups], batches, config.awq_rows)
    applied = []
    for group in groups:
        x = activations.get(group.producer)
        if x is None:  # never reached by the calibration data
            skipped += [{"layer": c, "why": "no calibration activations"} for c in group.consumers]
            continue
        targets = [c for c in group.consumers if c in plan.quantized]
        weights = [model.get_submodule(c).weight.detach().float() for c in targets]
        mean_abs = x.abs().mean(0)
        errors = {a: _error(x, weights, _scales(mean_abs, a), config) for a in config.alphas}
        alpha = min(errors, key=lambda a: (errors[a], a))
        base = errors.get(0.0) or _error(x, weights, torch.ones_like(mean_abs), config)
        if alpha != 0.0:
            _fold(model, group, _scales(mean_abs, alpha))
        applied.append(
            {
                "producer": group.producer,
                "kind": group.kind,
                "layers": list(group.consumers),
                "alpha": alpha,
                "error_ratio": round(errors[alpha] / base, 4) if base > 0 else 1.0,
            }
        )
    return {"applied": applied, "skipped": skipped}


@torch.no_grad()
def _fold(model: nn.Module, group: ScaleGroup, s: torch.Tensor) -> None:
    """Divide the producer's output channels by ``s``; multiply every consumer's columns."""
    producer = model.get_submodule(group.producer)
    if group.kind == "layernorm":
        producer.weight.div_(s.to(producer.weight.dtype))
        if producer.bias is not None:
            producer.bias.div_(s.to(producer.bias.dtype))
    else:
        producer.weight.div_(s.to(producer.weight.dtype)[:, None])
        if producer.bias is not None:
            producer.bias.div_(s.to(producer.bias.dtype))
    for name in group.consumers:
        layer = model.get_submodule(name)
        layer.weight.mul_(s.to(layer.weight.dtype)[None, :])


CLIP_RATIOS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7)
CLIP_ROWS = 1024  # calibration rows per layer for the clipping search


@torch.no_grad()
def search_clips(
    model: nn.Module,
    plan: W4Plan,
    config: W4Config,
    batches: list[tuple[torch.Tensor, ...]],
) -> dict[str, torch.Tensor]:
    """Per W4 layer and group, the range ratio (``CLIP_RATIOS``) whose rounding gives the
    smallest output error on calibration inputs: a clipped outlier weight costs less than the
    coarser steps it forces on the rest of its group. Run after the scales are folded."""
    inputs = _collect_inputs(model, list(plan.quantized), batches, CLIP_ROWS)
    gs = config.group_size
    clips: dict[str, torch.Tensor] = {}
    for name, x in inputs.items():
        w = model.get_submodule(name).weight.detach().float()
        out_f, in_f = w.shape
        xg = x.reshape(len(x), in_f // gs, gs)
        best_err = torch.full((out_f, in_f // gs), float("inf"))
        best = torch.ones(out_f, in_f // gs)
        for ratio in CLIP_RATIOS:
            clip = torch.full((out_f, in_f // gs), ratio)
            codes, scales, zps = quantize_groups(w, gs, config.symmetric, clip)
            diff = (w - dequantize_groups(codes, scales, zps, gs)).reshape(out_f, -1, gs)
            err = torch.einsum("rgk,ogk->rog", xg, diff).pow(2).sum(0)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best = torch.where(better, clip, best)
        clips[name] = best
    return clips


def _collect_inputs(
    model: nn.Module, names: list[str], batches: list[tuple[torch.Tensor, ...]], rows: int
) -> dict[str, torch.Tensor]:
    """Up to ``rows`` input rows of each named linear over the calibration batches."""
    seen: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    counts = dict.fromkeys(names, 0)

    def hook(name: str):
        def record(_module, inputs):
            if counts[name] < rows:
                x = inputs[0].detach().float()
                flat = x.reshape(-1, x.shape[-1])
                seen[name].append(flat[: rows - counts[name]])
                counts[name] += len(seen[name][-1])

        return record

    handles = [model.get_submodule(n).register_forward_pre_hook(hook(n)) for n in names]
    try:
        for batch in batches:
            model(*batch)
            if all(count >= rows for count in counts.values()):
                break
    finally:
        for handle in handles:
            handle.remove()
    return {name: torch.cat(parts) for name, parts in seen.items() if parts}
