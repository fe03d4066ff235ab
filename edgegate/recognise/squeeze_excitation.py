"""Squeeze-excitation: x * gate(fc2(act(fc1(pool(x))))), a per-channel [0, 1] scale.

Keyed by the block classes that implement it (edgegate's, torchvision's, timm's), matched by
qualified name so neither library has to import, and by the graph pattern for everyone
else's: a global average pool, then only single-input layers (1x1 convs or linears, their
activations, norms), then a sigmoid or hard-sigmoid whose output multiplies a tensor.
"""

from __future__ import annotations

import torch
from torch import fx

from edgegate.recognise.base import Found, Recogniser
from edgegate.recognise.graph import (
    depends_on_input,
    is_global_pool,
    is_mul,
    modules_of,
    owners,
    qualified_name,
)

MAX_SQUEEZE_DEPTH = 12  # pool -> fc1 -> (norm) -> act -> fc2 -> (norm) is 5; room for extras


def multiplies_tensor(node: fx.Node) -> bool:
    """Whether ``node``'s output scales another input-dependent tensor elementwise."""
    for user in node.users:
        if not is_mul(user):
            continue
        others = [a for a in user.args if isinstance(a, fx.Node) and a is not node]
        if any(depends_on_input(other) for other in others):
            return True
    return False


def _single_data_input(node: fx.Node) -> fx.Node | None:
    """The one input-dependent argument of ``node``, or None when it has none or several."""
    data = [arg for arg in node.all_input_nodes if depends_on_input(arg)]
    return data[0] if len(data) == 1 else None


def squeeze_source(gate: fx.Node, modules: dict) -> list[fx.Node] | None:
    """The path from the global pool to the gate (pool first), or None if the gate's input
    is not a squeeze of a pooled tensor."""
    path, current = [gate], _single_data_input(gate)
    for _ in range(MAX_SQUEEZE_DEPTH):
        if current is None or current.op == "placeholder":
            return None
        path.append(current)
        if is_global_pool(current, modules):
            return path[::-1]
        if is_mul(current) or len(current.users) > 1:
            return None  # another branch joins or leaves: not a squeeze path
        current = _single_data_input(current)
    return None


def _common_owner(nodes: list[fx.Node]) -> str:
    """The innermost module every node of ``nodes`` was traced in ('' for the root)."""
    stacks = [[path for path, _ in owners(node)] for node in nodes]
    common: list[str] = []
    for level in zip(*stacks, strict=False):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return common[-1] if common else ""


def _op_name(node: fx.Node, modules: dict) -> str:
    if node.op == "call_module":
        return type(modules[node.target]).__name__
    if isinstance(node.target, torch._ops.OpOverload):  # aten.conv2d.default -> conv2d
        return node.target._schema.name.split("::")[-1]
    return getattr(node.target, "__name__", str(node.target)).split(".")[-1]


class SqueezeExcitation(Recogniser):
    family = "squeeze_excitation"
    becomes = "a fixed-range [0, 1] quantizer on the SE gate's output, and the gate-flip check"
    module_classes = (
        "edgegate.models.blocks.se.SqueezeExcite",
        "torchvision.ops.misc.SqueezeExcitation",
        "timm.layers.squeeze_excite.SEModule",
        "timm.layers.squeeze_excite.SqueezeExcite",
        "timm.layers.squeeze_excite.EffectiveSEModule",
        "timm.models._efficientnet_blocks.SqueezeExcite",
    )

    def find(self, graph_module: fx.GraphModule, candidates: dict[fx.Node, str]) -> list[Found]:
        modules = modules_of(graph_module)
        found = []
        for node, kind in candidates.items():
            if kind not in ("sigmoid", "hardsigmoid") or not multiplies_tensor(node):
                continue
            block = self._known_block(node)
            if block is not None:
                path, cls = block
                found.append(Found(path, self.family, kind, f"class {cls}", node))
                continue
            squeeze = squeeze_source(node, modules)
            if squeeze is None:
                continue
            ops = " -> ".join(_op_name(step, modules) for step in squeeze)
            path = _common_owner(squeeze)
            found.append(Found(path, self.family, kind, f"pattern {ops} -> mul", node))
        return found

    def _known_block(self, node: fx.Node) -> tuple[str, str] | None:
        for path, cls in reversed(owners(node)):
            name = qualified_name(cls)
            if name in self.module_classes:
                return path, name
        return None
