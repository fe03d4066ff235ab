"""Transformer-shaped graphs (3D activations, matmuls, softmax) in ONNX Runtime's integer kernels.

Under the onnxruntime profiles, `edgegate.quant.graph` quantizes each tensor once and ONNX
Runtime fuses DQ -> op -> Q into one integer kernel. Attention blocks left the integer domain
around every matmul all the same, for reasons a CNN never meets:
- q, k and v are slices of the qkv linear's quantized output, reached through reshape, permute
  and select; the matmul inputs got calibrated quantizers of their own, which requantize values
  that lie on an 8-bit grid already (an extra rounding) and, behind a Gather (which ORT does not
  move a DQ across), left the matmuls reading float.
- ``q * scale`` sat between the grid and the matmul as a float Mul.
- the gated-attention output gate multiplied a float matmul output.
- the clipped softmax's stretch, shift and clip ran in float.

The passes here (run after the generic placement, only on graphs that hold attention) fix that
with forms whose fake-quant arithmetic is what the integer kernels compute:
- `OnGrid`: a requantizer of values already on a grid becomes that grid's own Q/DQ (exact, no
  rounding): ORT then passes the integer tensor through Reshape/Transpose/Gather;
- ``x * c`` on a grid (c > 0) is the same codes read at scale ``s * c`` (`OnGrid` with a
  factor), so the Mul disappears;
- a gate multiply gets a quantized matmul output on one side and the gate's [0, 1] grid on the
  other: QLinearMatMul, then QLinearMul;
- clipped softmax is `IntegerClippedSoftmax`: the softmax on the gate grid, then its codes read
  at ``(zeta - gamma) / 255`` plus gamma, requantized onto the gate grid (QLinearAdd; the clip
  at 0 and 1 is the saturation of u8 with zero point 0).
`edgegate.quant.qdq` writes them as Q/DQ; linears on 3D inputs export as 2D Gemms there, so ORT
runs them as QGemm with the int32 bias inside.

The attention scores stay float: QK^T runs as MatMulIntegerToFloat, then a float Softmax and
the Q of its output. ORT 1.32 does fuse DQ -> Softmax -> Q into QLinearSoftmax, but its scalar
kernel took 4x the time of Softmax + Q at 4 heads x 128 or 197 tokens (200 vs 54 us, 463 vs
113 us; equal at 17), would need the scores quantized (a causal mask's -inf has no code), and
scales by ``floor(1 / y_scale)``, which float32's 1/255 makes 254: a softmax of 1 would read
254/255.
"""

from __future__ import annotations

import operator

import torch
from brevitas.nn import QuantConv1d, QuantConv2d, QuantIdentity, QuantLinear
from torch import fx, nn

from edgegate.models.blocks.attention import ClippedSoftmax
from edgegate.quant.gates import UnitRangeUint8
from edgegate.quant.integer_gates import unique_name

_MATMULS = {operator.matmul, torch.matmul, torch.bmm, "matmul", "bmm"}
_MULS = {operator.mul, torch.mul, "mul"}
# ops that only move, select or regroup elements: a tensor on a grid stays on it
_LAYOUT_METHODS = {
    "view", "reshape", "permute", "transpose", "flatten", "unflatten", "unsqueeze",
    "squeeze", "contiguous", "select", "narrow", "chunk", "split", "unbind",
}  # fmt: skip
_LAYOUT_FUNCTIONS = {
    operator.getitem, torch.reshape, torch.permute, torch.transpose, torch.flatten,
    torch.unflatten, torch.unsqueeze, torch.squeeze, torch.select, torch.narrow, torch.chunk,
    torch.split, torch.unbind,
}  # fmt: skip
_SOFTMAX_TYPES = (nn.Softmax, ClippedSoftmax)


class OnGrid(nn.Module):
    """A tensor whose values lie on ``grid``'s quantization grid already (reached from that
    grid's quantizer through layout ops), times ``factor``.

    The fake-quant model computes ``x * factor``, nothing else: re-quantizing a value on a grid
    with that grid changes nothing. The Q/DQ twin writes the grid's Q and a DQ at
    ``scale * factor``, so ONNX Runtime keeps the integer tensor (and reads it scaled for free)
    where it would otherwise leave the integer domain (`edgegate.quant.qdq.GridView`).
    """

    def __init__(self, grid: nn.Module, factor: float = 1.0) -> None:
        super().__init__()
        self.grid = grid  # the activation proxy of the quantizer the values came from
        self.factor = float(factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor if self.factor != 1.0 else x

    def extra_repr(self) -> str:
        return f"factor={self.factor:g}"


class IntegerClippedSoftmax(nn.Module):
    """``clip((zeta - gamma) * p + gamma, 0, 1)`` with ``p = softmax(x)`` on the [0, 1] gate
    grid first; the result is quantized onto that grid by the gate quantizer after it.

    ONNX Runtime then computes it as QLinearSoftmax (or Softmax and Q) and one QLinearAdd: the
    stretch is the scale the codes of ``p`` are read at, gamma a constant, the clip the u8
    saturation. The price is one extra rounding of ``p`` (half a step of 1/255)."""

    def __init__(self, softmax: ClippedSoftmax) -> None:
        super().__init__()
        self.gamma, self.zeta, self.dim = softmax.gamma, softmax.zeta, softmax.dim
        self.unit = QuantIdentity(act_quant=UnitRangeUint8, return_quant_tensor=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.unit(torch.softmax(x, self.dim))
        # the clamp is the gate quantizer's saturation, written out for calibration passes
        # (quantizers off), so that the output stays a clipped softmax then
        return torch.clamp(p * (self.zeta - self.gamma) + self.gamma, 0.0, 1.0)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, zeta={self.zeta}, dim={self.dim}"


def _is_call(node: fx.Node, targets: set) -> bool:
    if node.op == "call_function":
        return node.target in targets
    return node.op == "call_method" and node.target in targets


def _is_layout(node: fx.Node) -> bool:
    if node.op == "call_method":
        return node.target in _LAYOUT_METHODS
    if node.op != "call_function" or node.target not in _LAYOUT_FUNCTIONS:
        return False
    if node.target is operator.getitem:  # an index or slice, not a tensor of indices
        index = node.args[1]
        items = index if isinstance(index, tuple) else (index,)
        return not any(isinstance(i, fx.Node) for i in items)
    return True


def _module(node: fx.Node, modules: dict[str, nn.Module]) -> nn.Module | None:
    return modules.get(node.target) if node.op == "call_module" else None


def _is_activation_pair_matmul(node: fx.Node) -> bool:
    return _is_call(node, _MATMULS) and all(
        isinstance(a, fx.Node) and a.op != "get_attr" for a in node.args[:2]
    )


def holds_attention(graph_module: fx.GraphModule) -> bool:
    """Whether the graph has a softmax module or a matmul of two activations (attention)."""
    modules = dict(graph_module.named_modules())
    return any(
        isinstance(_module(n, modules), _SOFTMAX_TYPES) or _is_activation_pair_matmul(n)
        for n in graph_module.graph.nodes
    )


def grid_of(node: fx.Node, modules: dict[str, nn.Module]) -> nn.Module | None:
    """The activation proxy whose grid ``node``'s values lie on: the quantizer at the end of a
    chain of layout ops that leads back from ``node`` (None if there is none)."""
    while True:
        module = _module(node, modules)
        if isinstance(module, QuantIdentity):
            return module.act_quant if module.act_quant.is_quant_enabled else None
        if isinstance(module, OnGrid) and module.factor == 1.0:
            return module.grid
        if not _is_layout(node) or not isinstance(node.args[0], fx.Node):
            return None
        node = node.args[0]


def viewed_quantizer(node: fx.Node, quantized: dict) -> tuple[nn.Module, bool] | None:
    """(proxy, False) when ``node`` is a layout view of a tensor ``quantized`` knows (as
    `edgegate.quant.graph` records them): a layer reading the view then quantizes it with the
    same proxy, which re-quantizes nothing where the tensor is on that grid already, so ORT
    passes the integer tensor through the view (the ViT's head gate reads the normed input
    transposed, beside the qkv linear)."""
    while _is_layout(node) and isinstance(node.args[0], fx.Node):
        node = node.args[0]
        if node in quantized:
            return quantized[node][0], False
    return None


def _positive_scale(node: fx.Node) -> tuple[fx.Node, float] | None:
    """(x, c) for ``x * c`` or ``c * x`` with ``c`` a positive number."""
    if not _is_call(node, _MULS) or len(node.args) != 2:
        return None
    a, b = node.args
    if isinstance(a, fx.Node) and isinstance(b, (int, float)) and b > 0:
        return a, float(b)
    if isinstance(b, fx.Node) and isinstance(a, (int, float)) and a > 0:
        return b, float(a)
    return None


def _swap(graph_module: fx.GraphModule, node: fx.Node, module: nn.Module, source: fx.Node) -> None:
    """Replace the call at ``node`` by ``module`` applied to ``source``."""
    name = unique_name(graph_module, f"{node.name}_grid")
    graph_module.add_module(name, module)
    with graph_module.graph.inserting_before(node):
        new = graph_module.graph.call_module(name, (source,))
    node.replace_all_uses_with(new)
    graph_module.graph.erase_node(node)


def share_grids(graph_module: fx.GraphModule) -> int:
    """Every calibrated quantizer whose input is on a grid already (through layout ops, maybe
    times a positive constant) becomes an `OnGrid` of that grid; returns how many."""
    modules = dict(graph_module.named_modules())
    count = 0
    for node in list(graph_module.graph.nodes):
        if not isinstance(_module(node, modules), QuantIdentity):
            continue
        source, factor = node.args[0], 1.0
        scaled = _positive_scale(source)
        if scaled is not None and len(source.users) == 1:
            source, factor = scaled
        grid = grid_of(source, modules)
        if grid is None:
            continue
        mul = node.args[0] if factor != 1.0 else None
        _swap(graph_module, node, OnGrid(grid, factor), source)
        if mul is not None:
            graph_module.graph.erase_node(mul)
        count += 1
    return count


def _quantizes_its_input(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether ``node``'s value is quantized where it is consumed: each consumer, through
    layout ops, is a quantizer or a quantized layer's input."""
    if not node.users:
        return False
    for user in node.users:
        module = _module(user, modules)
        if isinstance(module, (QuantLinear, QuantConv1d, QuantConv2d)):
            if module.input_quant is None or not module.input_quant.is_quant_enabled:
                return False
        elif isinstance(module, QuantIdentity):
            continue
        elif not (_is_layout(user) and _quantizes_its_input(user, modules)):
            return False
    return True


def _insert_after(
    graph_module: fx.GraphModule, node: fx.Node, module: nn.Module, tag: str, only: fx.Node
) -> fx.Node:
    """``module`` applied to ``node``'s output, for the consumer ``only``."""
    name = unique_name(graph_module, f"{node.name}_{tag}")
    graph_module.add_module(name, module)
    with graph_module.graph.inserting_after(node):
        new = graph_module.graph.call_module(name, (node,))
    only.replace_input_with(node, new)
    return new


def quantize_gate_products(graph_module: fx.GraphModule, act_quant: type, gates: set[str]) -> int:
    """Each ``x * gate`` (gate: a quantizer in ``gates``, maybe through layout ops) whose
    product is quantized where it is used gets both factors on grids: the gate's own, and a
    calibrated ``act_quant`` on ``x`` (unless it is on a grid already), so that ONNX Runtime runs
    the product as QLinearMul and the op computing ``x`` with a quantized output; returns how
    many."""
    modules = dict(graph_module.named_modules())
    count = 0
    for node in list(graph_module.graph.nodes):
        if not _is_call(node, _MULS) or len(node.args) != 2:
            continue
        if not all(isinstance(a, fx.Node) for a in node.args):
            continue
        grids = [grid_of(a, modules) for a in node.args]
        gate_side = [
            i for i, a in enumerate(node.args) if grids[i] is not None and _gate_chain(a, gates)
        ]
        if not gate_side or not _quantizes_its_input(node, modules):
            continue
        for i, arg in enumerate(node.args):
            if _module(arg, modules).__class__ in (QuantIdentity, OnGrid):
                continue  # a quantizer's own output
            if grids[i] is not None:
                module = OnGrid(grids[i])
            else:
                module = QuantIdentity(act_quant=act_quant, return_quant_tensor=False)
            _insert_after(graph_module, arg, module, "product_quant", node)
        modules = dict(graph_module.named_modules())
        count += 1
    return count


def _gate_chain(node: fx.Node, gates: set[str]) -> bool:
    """Whether ``node`` is a gate quantizer's output, through layout ops."""
    while node.op != "call_module" or node.target not in gates:
        if not _is_layout(node) or not isinstance(node.args[0], fx.Node):
            return False
        node = node.args[0]
    return True


def integer_clipped_softmax(graph_module: fx.GraphModule) -> int:
    """Every `ClippedSoftmax` module as an `IntegerClippedSoftmax` (same name); returns how
    many."""
    count = 0
    for name, module in list(graph_module.named_modules()):
        if type(module) is ClippedSoftmax:
            parent, _, attr = name.rpartition(".")
            setattr(graph_module.get_submodule(parent) if parent else graph_module, attr,
                    IntegerClippedSoftmax(module))  # fmt: skip
            count += 1
    return count


def integer_attention_forms(graph_module: fx.GraphModule, act_quant: type) -> None:
    """The passes above, after `edgegate.quant.graph` placed its quantizers; ``act_quant`` is
    the profile's calibrated activation quantizer."""
    share_grids(graph_module)
    record = getattr(graph_module, "gate_record", {"recognised": []})
    gates = {g["quantizer"] for g in record["recognised"] if g.get("quantizer")}
    quantize_gate_products(graph_module, act_quant, gates)
    graph_module.delete_all_unused_submodules()  # the requantizers the views replaced
    graph_module.graph.lint()
    graph_module.recompile()
