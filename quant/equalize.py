"""Cross-layer equalization before calibration (Nagel et al. 2019, "Data-Free Quantization
through Weight Equalization and Bias Correction").

Why: a depthwise conv's channels (after BN folding) can differ in range by a factor of 100 or
more, and one scale per weight tensor then leaves the small channels a few integer levels.
Two layers joined by a positively homogeneous function (identity, ReLU: ``f(x / s) = f(x) / s``
for ``s > 0``) compute the same thing when the first layer's output channel ``i`` is divided
by ``s_i`` and the second layer's input channel ``i`` multiplied by it; choosing ``s_i`` to
balance the two layers' channel ranges shrinks the spread each per-tensor scale must cover.

brevitas's graph equalization (``EqualizeGraph``) does the region search and the scaling, and
fits edgegate's traced graphs as they are (gates, scans and `KeepFloat` layers are leaf modules
it does not know, so it leaves every region that touches them alone):
- conv -> ReLU -> conv, conv -> ReLU -> depthwise -> ReLU -> conv, iterated so the middle
  layer settles between both neighbours;
- residual streams: every layer that writes the stream and every layer that reads it share
  one set of scales;
- squeeze-excitation: the SE input reaches both the block's projection and, through the
  pooling, the SE's first 1x1 conv; both are sinks, so the first conv's input weights are
  rescaled with the projection's and the gate sees exactly what it saw before. The gate's
  multiply passes a per-channel scale through unchanged (``(x / s) * g = (x * g) / s``).
- hard-swish, ReLU6, sigmoid and GELU are not positively homogeneous (``relu6(x / s)`` clips at
  6, not at ``6 / s``), so brevitas treats them as region boundaries: those pairs stay as they
  are and are listed under ``not_homogeneous``; nothing is approximated.

What is edgegate's own here: the range figures before and after, the list of pairs left
alone, and a check that the equalized graph computes what the float graph computed (on the
caller's example inputs), which undoes the equalization rather than ship a changed function.

Bias absorption (the paper's section 4.2) is not done: it moves ``c = beta - 3 gamma`` of a
ReLU's input into the next layer's bias, which is exact only where the pre-activation stays
above ``c`` and, for a padded conv, only away from the border (padding adds zeros, not ``c``).
It changes the function, so it is left out; brevitas's ``merge_bias`` (the source's bias
counts in its channel range, shrunk) keeps equalized biases from growing instead.
"""

from __future__ import annotations

import operator
import statistics
from dataclasses import dataclass, field
from typing import Any

import torch
from brevitas.graph.equalize import EqualizeGraph
from torch import fx, nn
from torch.utils._pytree import tree_leaves

from edgegate.recognise.graph import plain_layer

# brevitas stops iterating once no scale moves by more than THRESHOLD; conv -> dw -> conv
# chains need a few rounds to settle (Nagel et al. iterate to convergence)
ITERATIONS = 20
THRESHOLD = 0.01
# relative error (max |after - before| / max |before|) an equalized graph may show: float
# rounding of the rescaled weights is ~1e-6; anything above is a changed function
FUNCTION_TOLERANCE = 1e-4

# activations that do not commute with a positive per-channel scale (reported, never crossed)
NOT_HOMOGENEOUS = (
    nn.Hardswish,
    nn.Hardtanh,  # ReLU6 is a Hardtanh
    nn.Hardsigmoid,
    nn.Sigmoid,
    nn.SiLU,
    nn.GELU,
    nn.Tanh,
    nn.ELU,
    nn.Mish,
    nn.Softplus,
)
# what a channel scale passes through unchanged on the way to the next layer (as brevitas sees)
_PASS_MODULES = (
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.Dropout,
    nn.Identity,
)
_PASS_FUNCTIONS = {operator.mul, torch.mul}


def range_ratio(weight: torch.Tensor) -> float | None:
    """max / min over output channels of the channel's largest |weight|: how far a single
    per-tensor scale must stretch. Channels that are all zero (pruned) are left out; None when
    no channel is left."""
    ranges = weight.detach().flatten(1).abs().amax(1)
    ranges = ranges[ranges > 0]
    if ranges.numel() == 0:
        return None
    return round(float(ranges.max() / ranges.min()), 3)


@dataclass
class Equalization:
    """What ``equalize_graph`` did: the regions, each layer's range ratio before and after,
    the pairs left alone, and the function check."""

    regions: list[dict[str, list[str]]] = field(default_factory=list)
    ratios: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    not_homogeneous: list[dict[str, str]] = field(default_factory=list)
    max_relative_error: float | None = None
    reverted: str | None = None  # why the equalization was undone, if it was

    @property
    def applied(self) -> bool:
        return bool(self.regions) and self.reverted is None

    def summary(self) -> dict[str, Any]:
        """Region and layer counts, and the median and worst range ratio before and after."""
        pairs = [r for r in self.ratios.values() if r[0] is not None and r[1] is not None]
        before, after = [p[0] for p in pairs], [p[1] for p in pairs]
        return {
            "regions": len(self.regions),
            "layers": len(self.ratios),
            "median_ratio_before": round(statistics.median(before), 2) if before else None,
            "median_ratio_after": round(statistics.median(after), 2) if after else None,
            "worst_ratio_before": round(max(before), 2) if before else None,
            "worst_ratio_after": round(max(after), 2) if after else None,
            "not_homogeneous_pairs": len(self.not_homogeneous),
        }

    def to_dict(self) -> dict[str, Any]:
        """report.json's ``equalization``: per region its layers' range ratios [before, after]."""
        return {
            "applied": self.applied,
            "reverted": self.reverted,
            "max_relative_error": self.max_relative_error,
            "summary": self.summary(),
            "regions": [
                {
                    **region,
                    "range_ratio": {
                        name: list(self.ratios.get(name, (None, None)))
                        for name in (*region["sources"], *region["sinks"])
                    },
                }
                for region in self.regions
            ],
            "not_homogeneous": self.not_homogeneous,
        }

    def line(self) -> str:
        """One line for the CLI."""
        s = self.summary()
        if self.reverted:
            return f"not applied: {self.reverted}"
        if not self.regions:
            return "no layer pair can be equalized exactly"
        return (
            f"{s['regions']} regions, {s['layers']} layers; per-channel range ratio median "
            f"{s['median_ratio_before']:g} -> {s['median_ratio_after']:g}, worst "
            f"{s['worst_ratio_before']:g} -> {s['worst_ratio_after']:g}; "
            f"{s['not_homogeneous_pairs']} pairs left (activation not homogeneous)"
        )


def _weights(graph_module: fx.GraphModule) -> dict[str, torch.Tensor]:
    return {
        name: module.weight
        for name, module in graph_module.named_modules()
        if getattr(module, "weight", None) is not None and isinstance(module.weight, torch.Tensor)
    }


def _compute_node(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    return node.op == "call_module" and plain_layer(modules.get(str(node.target))) is not None


def _passes_scale(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules.get(str(node.target)), _PASS_MODULES)
    return node.op == "call_function" and node.target in _PASS_FUNCTIONS


def not_homogeneous_pairs(graph_module: fx.GraphModule) -> list[dict[str, str]]:
    """Layer pairs joined through an activation that a channel scale does not commute with
    (the layer's one consumer), found through pooling, dropout and multiplies."""
    modules = dict(graph_module.named_modules())
    pairs = []
    for node in graph_module.graph.nodes:
        if not _compute_node(node, modules) or len(node.users) != 1:
            continue
        act = next(iter(node.users))
        act_module = modules.get(str(act.target)) if act.op == "call_module" else None
        if not isinstance(act_module, NOT_HOMOGENEOUS):
            continue
        stack, seen = list(act.users), set()
        while stack:
            user = stack.pop()
            if user in seen:
                continue
            seen.add(user)
            if _compute_node(user, modules):
                pairs.append(
                    {
                        "source": str(node.target),
                        "sink": str(user.target),
                        "through": type(act_module).__name__,
                    }
                )
            elif _passes_scale(user, modules):
                stack.extend(user.users)
    return pairs


def _outputs(graph_module: fx.GraphModule, inputs: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
    with torch.no_grad():
        result = graph_module(*inputs)
    return [leaf.detach().float() for leaf in tree_leaves(result) if isinstance(leaf, torch.Tensor)]


def relative_error(reference: list[torch.Tensor], candidate: list[torch.Tensor]) -> float:
    """Largest max |candidate - reference| / max |reference| over the outputs."""
    worst = 0.0
    for ref, cand in zip(reference, candidate, strict=True):
        scale = float(ref.abs().max()) or 1.0
        worst = max(worst, float((cand - ref).abs().max()) / scale)
    return worst


def equalize_graph(
    graph_module: fx.GraphModule, example: tuple[torch.Tensor, ...] | None = None
) -> Equalization:
    """Equalize ``graph_module`` in place (a traced float graph, BN folded into its convs).

    With ``example`` inputs, the outputs before and after are compared; an equalization that
    moves them by more than ``FUNCTION_TOLERANCE`` (relative) is undone and says why.
    """
    graph_module.eval()
    weights = _weights(graph_module)
    before = {name: range_ratio(w) for name, w in weights.items()}
    snapshot = {k: v.detach().clone() for k, v in graph_module.state_dict().items()}
    reference = _outputs(graph_module, example) if example is not None else None
    _, regions = EqualizeGraph(
        iterations=ITERATIONS, threshold=THRESHOLD, return_regions=True
    ).apply(graph_module)
    record = Equalization(not_homogeneous=not_homogeneous_pairs(graph_module))
    after = {name: range_ratio(w) for name, w in _weights(graph_module).items()}
    for region in regions:
        sources, sinks = sorted(set(region.srcs_names)), sorted(set(region.sinks_names))
        record.regions.append({"sources": sources, "sinks": sinks})
        for name in (*sources, *sinks):
            record.ratios[name] = (before.get(name), after.get(name))
    if reference is not None and regions:
        error = relative_error(reference, _outputs(graph_module, example))
        record.max_relative_error = float(f"{error:.3g}")
        if not error <= FUNCTION_TOLERANCE:
            graph_module.load_state_dict(snapshot)
            record.reverted = (
                f"the equalized graph's outputs moved by {error:.2g} (relative) on the example "
                f"inputs, more than {FUNCTION_TOLERANCE:g}: an op in a region does not commute "
                "with channel scales; the model is quantized unequalized"
            )
    return record
