"""Where the `tensorrt` profile puts Q/DQ beyond compute inputs: TensorRT's fusion rules.

TensorRT (explicit quantization) runs a layer in INT8 only where the Q/DQ around it let it fuse
(developer guide, "Explicit Quantization": Q/DQ processing, layer-placement recommendations).
`quant.graph` quantizes the inputs of every conv, linear and matmul and both inputs of residual
adds, never outputs. On top of that this pass applies two of TensorRT's rules:

- **residual add fed straight by a conv or linear**: only the skip input keeps its Q/DQ. TensorRT
  fuses the add into the conv, the fused output takes the skip's INT8 precision, and the next
  Q fuses in too; a Q/DQ between the conv and the add would split them.
- **average pooling and gate multiplies whose output is quantized**: their inputs are quantized
  too (once per tensor), because TensorRT fuses DQ -> pool / elementwise -> Q into one INT8
  layer, and a non-weighted INT8 layer needs both INT8 inputs and INT8 output. This keeps the
  SE block in INT8 (pooling, and the multiply of the SE input by the gate, which already sits on
  its fixed [0, 1] grid), the classifier's pooling, and the gated-attention multiply. A gate
  computed point-wise from the very tensor it multiplies (x * hardsigmoid(x), swish) is left
  alone: TensorRT fuses that chain into the conv before it.

Every change is a brevitas quantizer added to, or taken out of, the fake-quant graph, so the
Q/DQ twin (`quant.qdq`) computes exactly what the calibrated model does. The rules and their
sources: README.md, "Where the `tensorrt` profile puts Q/DQ"; one test per rule in
tests/quant/test_tensorrt_placement.py.
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from brevitas.nn import QuantConv1d, QuantConv2d, QuantIdentity, QuantLinear
from torch import fx, nn

from edgegate.quant.gates import UnitRangeInt8, UnitRangeUint8
from edgegate.quant.profiles import QuantProfile
from edgegate.quant.quantizers import act_quantizer
from edgegate.recognise.graph import depends_on_input, is_mul

_aten = torch.ops.aten
_COMPUTE = (QuantConv1d, QuantConv2d, QuantLinear)
_ADDS = {operator.add, torch.add, _aten.add.Tensor, "add"}

# ops that only move or re-view data: Q and DQ commute with them, so TensorRT propagates Q/DQ
# through them ("Q/DQ propagation"), and a Q behind one still quantizes the op before it
_SHAPE_FUNCTIONS = {
    torch.flatten,
    torch.reshape,
    torch.squeeze,
    torch.unsqueeze,
    torch.transpose,
    torch.permute,
    operator.getitem,
    _aten.view.default,
    _aten.reshape.default,
    _aten._unsafe_view.default,
    _aten.flatten.using_ints,
    _aten.squeeze.dim,
    _aten.squeeze.dims,
    _aten.unsqueeze.default,
    _aten.permute.default,
    _aten.transpose.int,
    _aten.clone.default,
    _aten.slice.Tensor,
    _aten.select.int,
}
_SHAPE_METHODS = {
    "flatten",
    "unflatten",
    "view",
    "reshape",
    "squeeze",
    "unsqueeze",
    "transpose",
    "permute",
    "contiguous",
}
_SHAPE_MODULES = (nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout)

# average pooling over the image: TensorRT's parser makes GlobalAveragePool / AveragePool a
# pooling layer, the guide's own example of a layer that fuses with its DQ input and Q output
_POOL_MODULES = (nn.AdaptiveAvgPool2d, nn.AvgPool2d)
_POOL_FUNCTIONS = {
    F.adaptive_avg_pool2d,
    F.avg_pool2d,
    _aten.adaptive_avg_pool2d.default,
    _aten._adaptive_avg_pool2d.default,
    _aten.avg_pool2d.default,
}
_MEANS = {torch.mean, _aten.mean.dim, "mean"}
_IMAGE_AXES = ({2, 3}, {-2, -1}, {2, -1}, {-2, 3})


def place_for_tensorrt(graph_module: fx.GraphModule, profile: QuantProfile, method: str) -> None:
    """Apply TensorRT's residual-add and pooling / gate-multiply rules to a graph that
    `quant.graph` has placed compute-input and residual-add quantizers in."""
    modules = dict(graph_module.named_modules())
    fuse_residual_adds(graph_module, modules)
    quantize_fusible_inputs(graph_module, modules, act_quantizer(profile, method))


def _called(node: fx.Node, modules: dict[str, nn.Module]) -> nn.Module | None:
    return modules.get(node.target) if node.op == "call_module" else None


def _is_quantizer(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    return isinstance(_called(node, modules), QuantIdentity)


def is_gate_quantizer(module: nn.Module | None) -> bool:
    """A fixed [0, 1] gate quantizer (`quant.gates`), never calibrated."""
    if not isinstance(module, QuantIdentity):
        return False
    injector = getattr(module.act_quant, "quant_injector", None)
    return isinstance(injector, type) and issubclass(injector, (UnitRangeInt8, UnitRangeUint8))


def _is_compute(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """A brevitas conv or linear with a quantized input: a weighted op TensorRT runs in INT8."""
    layer = _called(node, modules)
    return isinstance(layer, _COMPUTE) and layer.input_quant.is_quant_enabled


def _is_shape_op(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules.get(node.target), _SHAPE_MODULES)
    if node.op == "call_function":
        return node.target in _SHAPE_FUNCTIONS
    return node.op == "call_method" and node.target in _SHAPE_METHODS


def _is_add(node: fx.Node) -> bool:
    return node.op in ("call_function", "call_method") and node.target in _ADDS


def _is_activation(arg: object) -> bool:
    return isinstance(arg, fx.Node) and arg.op != "get_attr" and depends_on_input(arg)


# --- residual adds ----------------------------------------------------------------------------


def _fused_branch(add: fx.Node, modules: dict[str, nn.Module]) -> fx.Node | None:
    """The quantizer on ``add``'s input that comes straight from a conv or linear (its only
    consumer), when the other input is quantized too: the branch TensorRT fuses the add into.
    Of two such inputs, the later layer's (the nearer one) is fused, the other stays the skip."""
    args = [a for a in add.args[:2] if isinstance(a, fx.Node)]
    if len(args) != 2 or not all(_is_quantizer(a, modules) for a in args):
        return None
    order = {node: i for i, node in enumerate(add.graph.nodes)}
    fusible = [
        quant
        for quant in args
        if len(quant.users) == 1
        and not is_gate_quantizer(_called(quant, modules))
        and _is_compute(quant.args[0], modules)
        and len(quant.args[0].users) == 1
    ]
    return max(fusible, key=lambda quant: order[quant.args[0]], default=None)


def fuse_residual_adds(graph_module: fx.GraphModule, modules: dict[str, nn.Module]) -> int:
    """Take the Q/DQ off the conv / linear branch of every residual add (the skip keeps its
    own); returns how many. The guide: quantize the residual input of a skip connection, so the
    add fuses into the weighted layer and its output (with the next Q) stays INT8."""
    removed = 0
    for node in list(graph_module.graph.nodes):
        if not _is_add(node):
            continue
        quant = _fused_branch(node, modules)
        if quant is None:
            continue
        node.replace_input_with(quant, quant.args[0])
        graph_module.graph.erase_node(quant)
        graph_module.delete_submodule(quant.target)
        del modules[quant.target]
        removed += 1
    return removed


# --- pooling and gate multiplies --------------------------------------------------------------


def _is_image_mean(node: fx.Node) -> bool:
    """``x.mean((2, 3), keepdim=True)``: exported as GlobalAveragePool (exporters.onnx)."""
    if not (node.op in ("call_function", "call_method") and node.target in _MEANS):
        return False
    dims = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
    keep = node.kwargs.get("keepdim", node.args[2] if len(node.args) > 2 else False)
    if isinstance(dims, int) or dims is None:
        return False
    return bool(keep) and set(dims) in _IMAGE_AXES


def _is_avg_pool(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules.get(node.target), _POOL_MODULES)
    if node.op == "call_function" and node.target in _POOL_FUNCTIONS:
        return True
    return _is_image_mean(node)


def _quantized_output(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether every consumer of ``node`` (looking through shape-only ops) quantizes it: a
    quantizer, or a conv / linear that reads it as its quantized input."""
    stack, seen = list(node.users), set()
    while stack:
        user = stack.pop()
        if user in seen:
            continue
        seen.add(user)
        if _is_shape_op(user, modules):
            if not user.users:
                return False
            stack.extend(user.users)
        elif not (_is_quantizer(user, modules) or _is_compute(user, modules)):
            return False
    return bool(seen)


def _behind_shape_ops(node: fx.Node, modules: dict[str, nn.Module]) -> fx.Node:
    """The tensor ``node`` re-views: walks back through shape-only ops."""
    while _is_shape_op(node, modules) and node.all_input_nodes:
        node = node.all_input_nodes[0]
    return node


def _on_grid(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    return _is_quantizer(_behind_shape_ops(node, modules), modules)


def _self_gated(tensor: fx.Node, gate: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether ``gate`` is computed from ``tensor`` by point-wise ops alone (x * hardsigmoid(x),
    swish): a chain TensorRT fuses into the conv that produced ``tensor``."""
    node = gate
    while node is not tensor:
        inputs = node.all_input_nodes
        if len(inputs) != 1 or _has_weights(node, modules) or _is_avg_pool(node, modules):
            return False
        node = inputs[0]
    return True


def _has_weights(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """A layer with weights (conv, linear, a layer kept float): not a point-wise op."""
    module = _called(node, modules)
    if module is None or isinstance(module, QuantIdentity):
        return False
    return any(True for _ in module.parameters())


def _gate_multiply_input(node: fx.Node, modules: dict[str, nn.Module]) -> fx.Node | None:
    """The input to quantize of a multiply by a gate: the operand that is not on a grid, when
    the other one is a gate quantizer's output (a fixed [0, 1] grid) computed from more than a
    point-wise function of it."""
    if not is_mul(node) or len(node.args) < 2:
        return None
    a, b = node.args[:2]
    if not (_is_activation(a) and _is_activation(b)):
        return None
    for tensor, gate in ((a, b), (b, a)):
        source = _behind_shape_ops(gate, modules)
        if (
            is_gate_quantizer(_called(source, modules))
            and not _on_grid(tensor, modules)
            and not _self_gated(tensor, source, modules)
        ):
            return tensor
    return None


def _fusible_inputs(node: fx.Node, modules: dict[str, nn.Module]) -> list[fx.Node]:
    """The inputs of ``node`` to quantize so TensorRT fuses DQ -> node -> Q into one INT8 layer
    (none unless its output is quantized: a non-weighted INT8 layer needs an INT8 output)."""
    if _is_avg_pool(node, modules):
        source = node.args[0] if node.args else None
        wanted = [source] if _is_activation(source) and not _on_grid(source, modules) else []
    else:
        tensor = _gate_multiply_input(node, modules)
        wanted = [tensor] if tensor is not None else []
    return wanted if wanted and _quantized_output(node, modules) else []


def quantize_fusible_inputs(
    graph_module: fx.GraphModule, modules: dict[str, nn.Module], quantizer: type
) -> int:
    """A calibrated quantizer on the unquantized inputs of average pools and gate multiplies
    whose output is quantized, one per tensor (an SE block's pooling and multiply share the
    one on the SE input); returns how many quantizers were added."""
    made: dict[fx.Node, fx.Node] = {}
    for node in list(graph_module.graph.nodes):
        for tensor in _fusible_inputs(node, modules):
            quant = made.get(tensor)
            if quant is None:
                name = _free_name(f"{tensor.name}_trt_quant", modules)
                module = QuantIdentity(act_quant=quantizer, return_quant_tensor=False)
                graph_module.add_module(name, module)
                modules[name] = module
                with graph_module.graph.inserting_after(tensor):
                    quant = made[tensor] = graph_module.graph.call_module(name, (tensor,))
            node.replace_input_with(tensor, quant)
    return len(made)


def _free_name(name: str, modules: dict[str, nn.Module]) -> str:
    while name in modules:
        name = f"{name}_"
    return name
