"""Recognisers: find the gated blocks of any model's graph, whoever wrote the model.

One module per block family, each registered here in the order they claim nodes (a node one
recogniser claims is not offered to the next). A recogniser is keyed by the block, a module
class or a graph pattern, never by a model's name, so every model that shares the block is
covered: torchvision's and timm's SE blocks, edgegate's own ``Gate``, a user's hand-written
``x * torch.sigmoid(g)``. What it finds becomes an edgegate gate: a fixed [0, 1] quantizer on
the gate's output and the gate-flip check (``edgegate.quant``).

``recognise(graph_module)`` returns the recognised gates and, separately, the gate-like ops
and blocks nothing claimed, with the reason, so the quantizer can warn about them by name.
"""

from __future__ import annotations

from edgegate.recognise.base import Found, Leftover, Recogniser, Recognition
from edgegate.recognise.registry import get_recogniser, recognise, recognisers, register

__all__ = [
    "Found",
    "Leftover",
    "Recogniser",
    "Recognition",
    "get_recogniser",
    "recognise",
    "recognisers",
    "register",
]
