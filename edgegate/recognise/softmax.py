"""Attention probabilities: a softmax (or edgegate's clipped softmax) whose output weights the
values through a matmul. Its output lies in [0, 1] by construction, so it takes the fixed
range; a calibrated one would spend codes on the negative half it never reaches."""

from __future__ import annotations

import operator

import torch
from torch import fx

from edgegate.models.blocks.attention import ClippedSoftmax
from edgegate.recognise.base import Found, Recogniser
from edgegate.recognise.graph import modules_of, owner

_aten = torch.ops.aten
_MATMULS = {operator.matmul, torch.matmul, torch.bmm, torch.einsum, _aten.bmm.default}
_MATMUL_METHODS = {"matmul", "bmm"}
_PASS_THROUGH_DEPTH = 3  # dropout, a cast, a view between the softmax and its matmul


def _feeds_matmul(node: fx.Node, depth: int = _PASS_THROUGH_DEPTH) -> bool:
    for user in node.users:
        if user.op == "call_function" and user.target in _MATMULS:
            return True
        if user.op == "call_method" and user.target in _MATMUL_METHODS:
            return True
        if depth and len(user.all_input_nodes) == 1 and _feeds_matmul(user, depth - 1):
            return True
    return False


class AttentionSoftmax(Recogniser):
    family = "attention_softmax"
    becomes = "a fixed-range [0, 1] quantizer on the attention probabilities"
    module_classes = ("edgegate.models.blocks.attention.ClippedSoftmax", "torch.nn.Softmax")

    def find(self, graph_module: fx.GraphModule, candidates: dict[fx.Node, str]) -> list[Found]:
        modules = modules_of(graph_module)
        found = []
        for node, kind in candidates.items():
            if kind not in ("softmax", "clipped_softmax"):
                continue
            if node.op == "call_module" and isinstance(modules[node.target], ClippedSoftmax):
                matched = "class edgegate.models.blocks.attention.ClippedSoftmax"
            elif _feeds_matmul(node):
                matched = "pattern softmax -> matmul"
            else:
                continue
            found.append(Found(owner(node)[0], self.family, kind, matched, node))
        return found
