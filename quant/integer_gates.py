"""Hard-sigmoid gates and hard-swish as integer requantizations, for runtimes that run them so.

``hardsigmoid(x) = clip(x + 3, 0, 6) / 6``. On u8 with scale 6/255 and zero point 0 the clip
is the saturation of the quantizer itself: ``Q_{6/255}(x + 3)`` holds clip(x + 3, 0, 6), and
the same bytes read at scale 1/255 are the gate on the fixed [0, 1] gate grid of
`edgegate.quant.gates` (0 and 1 exact). ONNX Runtime runs that as one integer add
(``QLinearAdd(x, 3)``, its output scale 6/255), and hard-swish ``x * hardsigmoid(x)`` as that
add and one integer multiply (``QLinearMul``), where the graph edgegate exported before left
the integer domain twice per activation (DQ, HardSigmoid, Mul, Q). A gate right after a conv
or linear needs no add at all: the 3 goes into the layer's bias, and the layer's own output
quantizer is the 6/255 one.

The fake-quant modules here compute that arithmetic with brevitas quantizers, so that the
model `validate` compares with is the integer graph's model: the +3 is added before the
6/255 rounding, not after a float hard-sigmoid. `edgegate.quant.qdq` turns them into Q/DQ
that ONNX Runtime fuses into those kernels (`SixToUnit`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from brevitas.inject.enum import ScalingImplType
from brevitas.nn import QuantIdentity
from brevitas.quant import Uint8ActPerTensorFloat
from torch import fx, nn

HARD_SIGMOID_OFFSET = 3.0  # hardsigmoid(x) = clip(x + 3, 0, 6) / 6
HARD_SIGMOID_RANGE = 6.0

_HARDSWISH_FUNCTIONS = {F.hardswish, torch.ops.aten.hardswish.default}


class SixRangeUint8(Uint8ActPerTensorFloat):
    """[0, 6] on u8: scale 6/255, zero point 0; saturation at 255 is the clip at 6."""

    scaling_impl_type = ScalingImplType.CONST
    min_val = 0.0
    max_val = HARD_SIGMOID_RANGE


class SaturatingHardSigmoid(nn.Module):
    """``Q_{6/255}(x + offset) / 6``: a hard-sigmoid gate on the [0, 1] gate grid (1/255).

    ``offset`` is 3, or 0 once the 3 is folded into the bias of the layer that computes ``x``
    (`fold_gate_offsets`). Its output is the gate value, so the gate check reads it as it read
    the fixed [0, 1] quantizer it replaces.
    """

    def __init__(self, offset: float = HARD_SIGMOID_OFFSET) -> None:
        super().__init__()
        self.offset = offset
        self.six = QuantIdentity(act_quant=SixRangeUint8, return_quant_tensor=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shifted = x + self.offset if self.offset else x
        # the clamp is the quantizer's own saturation, written out for when brevitas switches
        # quantizers off (calibration passes), so that the gate stays a hard-sigmoid then
        return self.six(torch.clamp(shifted, 0.0, HARD_SIGMOID_RANGE)) / HARD_SIGMOID_RANGE

    def extra_repr(self) -> str:
        return f"offset={self.offset:g}"


class IntegerHardswish(nn.Module):
    """``x * hardsigmoid(x)`` with the gate as a saturating requantization of ``x + 3``; the
    product is quantized after it by a calibrated quantizer (`edgegate.quant.graph`)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = SaturatingHardSigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


def is_hardswish(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether ``node`` applies hard-swish (a module, ``F.hardswish`` or the aten op)."""
    if node.op == "call_module":
        return isinstance(modules.get(node.target), nn.Hardswish)
    return node.op == "call_function" and node.target in _HARDSWISH_FUNCTIONS


def _swap_node(
    graph_module: fx.GraphModule, node: fx.Node, name: str, module: nn.Module
) -> fx.Node:
    """Replace ``node`` (whose first argument is its input) by a call of ``module``."""
    graph_module.add_module(name, module)
    with graph_module.graph.inserting_after(node):
        new = graph_module.graph.call_module(name, (node.args[0],))
    node.replace_all_uses_with(new)
    graph_module.graph.erase_node(node)
    return new


def unique_name(graph_module: fx.GraphModule, base: str) -> str:
    names = set(dict(graph_module.named_modules()))
    name = base.strip(".").replace(".", "_")
    while name in names:
        name = f"{name}_"
    return name


def integer_hardswish(graph_module: fx.GraphModule, on_grid) -> int:
    """Every hard-swish whose input node passes ``on_grid`` as an `IntegerHardswish`; returns
    how many."""
    modules = dict(graph_module.named_modules())
    count = 0
    for node in list(graph_module.graph.nodes):
        if not is_hardswish(node, modules) or not on_grid(node.args[0]):
            continue
        base = node.target if node.op == "call_module" else node.name
        _swap_node(graph_module, node, unique_name(graph_module, f"{base}_int"), IntegerHardswish())
        count += 1
    if count:
        graph_module.graph.lint()
        graph_module.recompile()
    return count


def saturating_gate(graph_module: fx.GraphModule, node: fx.Node, name: str) -> fx.Node:
    """Replace the hard-sigmoid gate ``node`` by a `SaturatingHardSigmoid` called ``name``."""
    return _swap_node(graph_module, node, name, SaturatingHardSigmoid())


def fold_gate_offsets(graph_module: fx.GraphModule, foldable) -> int:
    """Move each saturating gate's +3 into the bias of the layer computing its input, where
    that layer (``foldable(module)``: a plain conv or linear) feeds nothing else; returns how
    many. The layer's output then needs no quantizer of its own: the gate's 6/255 one is it."""
    modules = dict(graph_module.named_modules())
    count = 0
    for node in graph_module.graph.nodes:
        gate = modules.get(node.target) if node.op == "call_module" else None
        if not isinstance(gate, SaturatingHardSigmoid) or not gate.offset:
            continue
        source = node.args[0]
        layer = modules.get(source.target) if source.op == "call_module" else None
        if layer is None or not foldable(layer) or len(source.users) != 1:
            continue
        with torch.no_grad():
            if layer.bias is None:
                out = layer.weight.shape[0]
                zeros = layer.weight.new_zeros(out)
                layer.bias = nn.Parameter(zeros, requires_grad=layer.weight.requires_grad)
            layer.bias += gate.offset
        gate.offset = 0.0
        count += 1
    return count


def folded_gate_user(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether ``node``'s one consumer is a gate whose offset is folded into ``node``'s layer
    (that gate quantizes the layer's output)."""
    if len(node.users) != 1:
        return False
    user = next(iter(node.users))
    gate = modules.get(user.target) if user.op == "call_module" else None
    return isinstance(gate, SaturatingHardSigmoid) and not gate.offset
