"""What the recognisers ask of an FX graph: which node is a gate activation, a pool, a product,
and which module a node belongs to.

Graphs come from three tracers, so each question accepts every spelling of its op: a module
(``nn.Sigmoid``, edgegate's ``Gate``), a function (``torch.sigmoid``, ``F.hardsigmoid``), a
tensor method (``x.sigmoid()``) or an aten overload (graphs made from a ``.pt2``).
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

from edgegate.models.blocks.attention import ClippedSoftmax
from edgegate.models.blocks.gate import Gate
from edgegate.models.blocks.scans import DeltaRuleScan, GLAScan, LinearScan

SCAN_TYPES = (LinearScan, GLAScan, DeltaRuleScan)
COMPUTE_BASES = (nn.Conv1d, nn.Conv2d, nn.Linear)

_aten = torch.ops.aten
_SIGMOIDS = {torch.sigmoid, F.sigmoid, _aten.sigmoid.default, "sigmoid"}
_HARD_SIGMOIDS = {F.hardsigmoid, _aten.hardsigmoid.default, "hardsigmoid"}
_MULS = {operator.mul, torch.mul, _aten.mul.Tensor, "mul"}
_MEANS = {torch.mean, _aten.mean.dim, "mean"}
_POOL_FUNCTIONS = {
    F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d,
    _aten.adaptive_avg_pool2d.default,
    _aten._adaptive_avg_pool2d.default,
}
_POOL_MODULES = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)


def modules_of(graph_module: fx.GraphModule) -> dict[str, nn.Module]:
    return dict(graph_module.named_modules())


def plain_layer(module: nn.Module) -> type[nn.Module] | None:
    """The torch.nn compute class (Conv1d, Conv2d, Linear) whose forward ``module`` runs
    unchanged, subclasses included; None for anything else. A subclass that keeps the base
    forward computes exactly what the base does, so it quantizes and folds the same way."""
    for base in COMPUTE_BASES:
        if isinstance(module, base) and type(module).forward is base.forward:
            return base
    return None


def _target_in(node: fx.Node, targets: set) -> bool:
    if node.op == "call_function":
        return node.target in targets
    if node.op == "call_method":
        return node.target in targets
    return False


def gate_kind(node: fx.Node, modules: dict[str, nn.Module]) -> str | None:
    """'sigmoid' or 'hardsigmoid' when ``node`` applies one (an output in [0, 1]), else None.

    A ``Gate`` with role 'scan' parameterises a scan and is not a gate output (design §4).
    """
    if node.op == "call_module":
        module = modules.get(node.target)
        if isinstance(module, Gate):
            return module.kind if module.role == "gate" else None
        if isinstance(module, nn.Sigmoid):
            return "sigmoid"
        if isinstance(module, nn.Hardsigmoid):
            return "hardsigmoid"
        return None
    if _target_in(node, _SIGMOIDS):
        return "sigmoid"
    if _target_in(node, _HARD_SIGMOIDS):
        return "hardsigmoid"
    return None


def is_mul(node: fx.Node) -> bool:
    return _target_in(node, _MULS)


def is_global_pool(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """An average over the spatial (or time) axes: adaptive average pooling or a mean."""
    if node.op == "call_module":
        return isinstance(modules.get(node.target), _POOL_MODULES)
    return _target_in(node, _MEANS) or _target_in(node, _POOL_FUNCTIONS)


def is_compute(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """A conv or linear layer (module, or a traced-through subclass's functional call)."""
    if node.op == "call_module":
        module = modules.get(node.target)
        return isinstance(module, COMPUTE_BASES)
    return node.op == "call_function" and node.target in (
        F.conv1d,
        F.conv2d,
        F.linear,
        _aten.conv1d.default,
        _aten.conv2d.default,
        _aten.linear.default,
        _aten.convolution.default,
    )


def depends_on_input(node: fx.Node) -> bool:
    """Whether a user input reaches ``node`` (parameters and buffers are get_attr nodes)."""
    stack, seen = [node], {node}
    while stack:
        current = stack.pop()
        if current.op == "placeholder":
            return True
        for arg in current.all_input_nodes:
            if arg not in seen:
                seen.add(arg)
                stack.append(arg)
    return False


def owner(node: fx.Node) -> tuple[str, type | str | None]:
    """The dotted path and class of the innermost module ``node`` was traced in ('' for the
    root). A traced call_module node's innermost module is the one it calls; a module that a
    rewrite put in (a ``.pt2``'s plain graph) keeps the path its aten op was traced in."""
    stack = node.meta.get("nn_module_stack") or {}
    if stack:
        path, cls = list(stack.values())[-1]
        return str(path), cls
    return (str(node.target), None) if node.op == "call_module" else ("", None)


def owners(node: fx.Node) -> list[tuple[str, type | str]]:
    """Every module ``node`` was traced in, outermost first, as (path, class)."""
    stack = node.meta.get("nn_module_stack") or {}
    return [(str(path), cls) for path, cls in stack.values()]


def qualified_name(cls: type | str) -> str:
    """``module.Class`` of a traced module's class (torch.export records it as that string)."""
    return cls if isinstance(cls, str) else f"{cls.__module__}.{cls.__qualname__}"


def _has_weights(module: nn.Module) -> bool:
    return isinstance(module, SCAN_TYPES) or any(True for _ in module.parameters())


def scan_region(graph_module: fx.GraphModule) -> set[fx.Node]:
    """Nodes between a scan and the compute layers that feed it (scan inputs: log-decay
    gates, beta); quantizers keep them float, since scan states compound their error."""
    modules = modules_of(graph_module)
    region: set[fx.Node] = set()
    for node in graph_module.graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), SCAN_TYPES):
            continue
        stack = list(node.all_input_nodes)
        while stack:
            producer = stack.pop()
            if producer in region:
                continue
            region.add(producer)
            if producer.op == "call_module" and _has_weights(modules[producer.target]):
                continue  # a projection (or a wrapped one): the region's edge
            stack.extend(producer.all_input_nodes)
    return region


_SOFTMAXES = {
    F.softmax,
    torch.softmax,
    _aten._softmax.default,
    _aten.softmax.int,
    "softmax",
}


def softmax_kind(node: fx.Node, modules: dict[str, nn.Module]) -> str | None:
    """'softmax' or 'clipped_softmax' when ``node`` computes one, else None."""
    if node.op == "call_module":
        module = modules.get(node.target)
        if isinstance(module, nn.Softmax):
            return "softmax"
        if isinstance(module, ClippedSoftmax):
            return "clipped_softmax"
        return None
    return "softmax" if _target_in(node, _SOFTMAXES) else None
