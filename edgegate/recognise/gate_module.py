"""edgegate's own ``Gate`` marker module, wherever the other recognisers left it (a gate that
is a model output, such as the gated-compression decision): the author declared its [0, 1]
range, so it takes the fixed-range quantizer whatever consumes it."""

from __future__ import annotations

from torch import fx

from edgegate.models.blocks.gate import Gate
from edgegate.recognise.base import Found, Recogniser
from edgegate.recognise.graph import modules_of

GATE_CLASS = "edgegate.models.blocks.gate.Gate"


class GateModule(Recogniser):
    family = "gate"
    becomes = "a fixed-range [0, 1] quantizer on the gate's output"
    module_classes = (GATE_CLASS,)

    def find(self, graph_module: fx.GraphModule, candidates: dict[fx.Node, str]) -> list[Found]:
        modules = modules_of(graph_module)
        return [
            Found(str(node.target), self.family, kind, f"class {GATE_CLASS}", node)
            for node, kind in candidates.items()
            if node.op == "call_module" and isinstance(modules[node.target], Gate)
        ]
