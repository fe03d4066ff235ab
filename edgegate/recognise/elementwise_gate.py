"""Elementwise gates: a sigmoid or hard-sigmoid whose output multiplies another tensor
(gated attention's output gate, GLU-style and recurrent gates, a user's ``x * sigmoid(g)``).
The product's [0, 1] factor takes the fixed range, so a closed gate stays exactly closed."""

from __future__ import annotations

from torch import fx

from edgegate.recognise.base import Found, Recogniser
from edgegate.recognise.graph import owner
from edgegate.recognise.squeeze_excitation import multiplies_tensor


class ElementwiseGate(Recogniser):
    family = "elementwise_gate"
    becomes = "a fixed-range [0, 1] quantizer on the gate's output, and the gate-flip check"

    def find(self, graph_module: fx.GraphModule, candidates: dict[fx.Node, str]) -> list[Found]:
        return [
            Found(owner(node)[0], self.family, kind, "pattern gate -> mul", node)
            for node, kind in candidates.items()
            if kind in ("sigmoid", "hardsigmoid") and multiplies_tensor(node)
        ]
