"""The recogniser registry and the one function that runs it over a graph."""

from __future__ import annotations

import re

from torch import fx

from edgegate.models.blocks.attention import ClippedSoftmax
from edgegate.models.blocks.gate import Gate
from edgegate.recognise.base import Found, Leftover, Recogniser, Recognition
from edgegate.recognise.elementwise_gate import ElementwiseGate
from edgegate.recognise.gate_module import GATE_CLASS, GateModule
from edgegate.recognise.graph import (
    depends_on_input,
    gate_kind,
    modules_of,
    owner,
    owners,
    qualified_name,
    scan_region,
    softmax_kind,
)
from edgegate.recognise.softmax import AttentionSoftmax
from edgegate.recognise.squeeze_excitation import SqueezeExcitation

_REGISTRY: dict[str, Recogniser] = {}

# Block class names that promise a gate: one of these with no gate recognised inside is worth
# a warning (its gate may be written in a way no recogniser reads, e.g. relu6(x + 3) / 6).
GATE_LIKE_CLASS = re.compile(r"(?i:squeeze|excit|gate)|SE(?![a-z])")
NORM_CLASS = re.compile(r"(?i:norm)")


def register(recogniser: Recogniser) -> Recogniser:
    """Add ``recogniser``; registration order is claim order."""
    if recogniser.family in _REGISTRY:
        raise ValueError(f"a recogniser for '{recogniser.family}' is registered already")
    _REGISTRY[recogniser.family] = recogniser
    return recogniser


def recognisers() -> list[Recogniser]:
    return list(_REGISTRY.values())


def get_recogniser(family: str) -> Recogniser:
    return _REGISTRY[family]


for _recogniser in (SqueezeExcitation(), AttentionSoftmax(), ElementwiseGate(), GateModule()):
    register(_recogniser)


def _marked(node: fx.Node, modules: dict) -> bool:
    """A gate its author marked with edgegate's own modules: honoured wherever it sits."""
    return node.op == "call_module" and isinstance(modules[node.target], (Gate, ClippedSoftmax))


def _feeds_output(node: fx.Node) -> bool:
    return any(user.op == "output" for user in node.users)


def recognise(graph_module: fx.GraphModule) -> Recognition:
    """Every gate output of ``graph_module`` that a registered recogniser claims, and the
    gate-like ops and blocks none did."""
    modules = modules_of(graph_module)
    region = scan_region(graph_module)
    candidates: dict[fx.Node, str] = {}
    leftovers: list[Leftover] = []
    for node in graph_module.graph.nodes:
        kind = gate_kind(node, modules) or softmax_kind(node, modules)
        if kind is None:
            continue
        path = owner(node)[0]
        if not depends_on_input(node):
            reason = "depends on no input: a learned constant, quantized as a weight would be"
            leftovers.append(Leftover(path, kind, reason, warn=False))
        elif node in region and not _marked(node, modules):
            reason = "feeds a scan: kept float with the scan's inputs"
            leftovers.append(Leftover(path, kind, reason, warn=False))
        else:
            candidates[node] = kind
    found: list[Found] = []
    for recogniser in recognisers():
        claimed = recogniser.find(graph_module, dict(candidates))
        for item in claimed:
            del candidates[item.node]
        found.extend(claimed)
    for node, kind in candidates.items():
        path = owner(node)[0]
        if _feeds_output(node):
            leftovers.append(Leftover(path, kind, "a model output, not a gate", warn=False))
        elif _routes(node):
            reason = "a mixture-of-experts router: its top-k picks experts, its weights scale them"
            leftovers.append(Leftover(path, kind, reason, warn=False))
        else:
            reason = "its output multiplies no tensor: left to calibration"
            leftovers.append(Leftover(path, kind, reason))
    leftovers.extend(_silent_blocks(graph_module, found, leftovers))
    order = {node: i for i, node in enumerate(graph_module.graph.nodes)}
    found.sort(key=lambda item: order[item.node])
    return Recognition(found, leftovers)


_TOPK = {"topk", "aten.topk.default", "aten.topk"}


def _routes(node: fx.Node) -> bool:
    """A softmax or sigmoid whose output is ranked by ``topk``: an MoE router, not a gate."""
    for user in node.users:
        target = user.target
        name = getattr(target, "__name__", None) or str(target)
        if user.op in ("call_function", "call_method") and (name in _TOPK or "topk" in name):
            return True
    return False


def _silent_blocks(
    graph_module: fx.GraphModule, found: list[Found], leftovers: list[Leftover]
) -> list[Leftover]:
    """Blocks whose class name promises a gate but in which nothing gate-like was seen."""
    covered = {item.path for item in found} | {item.path for item in leftovers}
    blocks: dict[str, str] = {}
    for node in graph_module.graph.nodes:
        for path, cls in owners(node):
            name = qualified_name(cls)
            if name == GATE_CLASS:
                continue
            short = name.rpartition(".")[2]
            if NORM_CLASS.search(short):  # a gated norm (x * silu(z)): no [0, 1] gate
                continue
            if GATE_LIKE_CLASS.search(short) and path not in blocks:
                blocks[path] = short
    silent = []
    for path, name in blocks.items():
        inside = any(c == path or c.startswith(f"{path}.") for c in covered)
        if not inside:
            reason = (
                "looks like a gate block, but no sigmoid, hard-sigmoid or softmax was seen in it"
            )
            silent.append(Leftover(path, name, reason))
    return silent
