"""Integer-friendly forms of a captured graph for XNNPACK, applied before PT2E annotation.

XNNPACK runs an op in int8 only where ExecuTorch's partitioner finds the quantized pattern
(dequantize -> op -> optional fused clamp -> quantize) and XNNPACK has an int8 kernel for it.
Two places in MobileNet-style networks miss that and pay for it in float:

- The hard-sigmoid gate. ExecuTorch decomposes ``hardsigmoid`` into an add, two clamps and a
  divide, and XNNPACK has no int8 divide, so every SE gate ran as eight float-side nodes
  (two layout transposes, two int8<->float converts and the four ops). Read straight off a
  convolution or linear layer (the SE gate of every MobileNetV3), the gate folds into that
  layer: ``hardsigmoid(Wx + b) = clamp(Wx/6 + b/6 + 1/2, 0, 1)``, so the layer takes ``W/6``
  and ``b/6 + 1/2`` and the gate becomes a clamp to [0, 1]. XNNPACK fuses the clamp into the
  layer and requantizes its int32 sums onto the gate's fixed grid (scale 1/255, zero point
  -128) directly; the saturation of that requantization is the clip, and 0 and 1 stay the
  exact codes -128 and 127. Per-channel weight scales follow the weights, so the int8 weight
  codes are those of ``W``.
- The image stem. XNNPACK converts an NCHW model input to NHWC inside the delegate; with the
  input quantized first that is an int8 transpose, which for 3-channel images costs about
  three times the float one (0.12 vs 0.04 ms at 224x224 on an AVX-512 EPYC, one thread),
  while the stem's int8 convolution is no faster than its float one (a 3-channel conv is
  memory-bound). A convolution reading a model input of at most ``STEM_CHANNELS`` channels
  therefore stays float; its output is quantized as before.

Both keep the converted model the exact reference: it computes the folded layer, the clamp and
the float stem that the program runs.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import fx, nn

# layers a hard-sigmoid gate folds into (their weight's first dim is the output channel)
AFFINE_OPS = ("aten.linear.default", "aten.conv1d.default", "aten.conv2d.default")
FOLDED_GATE = "edgegate_folded_hardsigmoid"  # node meta: this clamp is a folded gate
STEM_CHANNELS = 4  # image inputs: gray, RGB, RGBA


def _target(node: fx.Node) -> str:
    return str(node.target) if node.op == "call_function" else ""


def _is_sole_attr_use(node: object, user: fx.Node) -> bool:
    """Whether ``node`` is a constant (get_attr) read by ``user`` alone, here and nowhere else."""
    if not isinstance(node, fx.Node) or node.op != "get_attr" or set(node.users) != {user}:
        return False
    same = [n for n in node.graph.nodes if n.op == "get_attr" and n.target == node.target]
    return same == [node]


def foldable_layer(gate: fx.Node) -> fx.Node | None:
    """The conv/linear a hard-sigmoid gate alone reads, with a constant weight and bias that
    only it uses (so scaling them changes nothing else), else None."""
    if _target(gate) != "aten.hardsigmoid.default":
        return None
    layer = gate.args[0]
    if not isinstance(layer, fx.Node) or _target(layer) not in AFFINE_OPS:
        return None
    if set(layer.users) != {gate} or layer.kwargs:
        return None
    if not _is_sole_attr_use(layer.args[1], layer):
        return None
    bias = layer.args[2] if len(layer.args) > 2 else None
    if bias is not None and not _is_sole_attr_use(bias, layer):
        return None
    return layer


def _owner(model: fx.GraphModule, target: str) -> tuple[nn.Module, str]:
    path, _, leaf = target.rpartition(".")
    return (model.get_submodule(path) if path else model), leaf


def _replace_attr(model: fx.GraphModule, target: str, value: torch.Tensor) -> None:
    """Point ``target`` at ``value``, a new tensor: the module the graph was captured from,
    whose parameters the capture shares, keeps its own."""
    owner, leaf = _owner(model, target)
    if leaf in owner._buffers:
        owner._buffers[leaf] = value
    else:
        setattr(owner, leaf, nn.Parameter(value, requires_grad=False))


def _free_name(model: fx.GraphModule, stem: str) -> str:
    name, k = stem, 0
    while hasattr(model, name):
        k += 1
        name = f"{stem}_{k}"
    return name


def fold_hardsigmoid_gates(model: fx.GraphModule, gates: Iterable[fx.Node]) -> list[fx.Node]:
    """Fold each foldable hard-sigmoid gate among ``gates`` into the layer it reads (module
    docstring). Returns the clamps that replaced them, tagged ``FOLDED_GATE`` in their meta."""
    folded = []
    for gate in list(gates):
        layer = foldable_layer(gate)
        if layer is None:
            continue
        weight_node = layer.args[1]
        owner, leaf = _owner(model, str(weight_node.target))
        weight = getattr(owner, leaf).detach()
        _replace_attr(model, str(weight_node.target), weight / 6.0)
        args = [*layer.args, *[None] * (3 - len(layer.args))]
        if args[2] is None:  # a layer without bias gets the gate's 1/2 as its bias
            bias = torch.full((weight.shape[0],), 0.5, dtype=weight.dtype)
            name = _free_name(model, f"{str(weight_node.target).replace('.', '_')}_gate_bias")
            model.register_buffer(name, bias)
            with model.graph.inserting_before(layer):
                args[2] = model.graph.get_attr(name)
            fake_mode = weight_node.meta["val"].fake_mode
            args[2].meta["val"] = fake_mode.from_tensor(bias, static_shapes=True)
            layer.args = tuple(args)
        else:
            owner, leaf = _owner(model, str(args[2].target))
            bias = getattr(owner, leaf).detach()
            _replace_attr(model, str(args[2].target), bias / 6.0 + 0.5)
        with model.graph.inserting_after(gate):
            clamp = model.graph.call_function(torch.ops.aten.hardtanh.default, (layer, 0.0, 1.0))
        clamp.meta = {**gate.meta, FOLDED_GATE: True}
        gate.replace_all_uses_with(clamp)
        model.graph.erase_node(gate)
        folded.append(clamp)
    if folded:
        model.recompile()
    return folded


def image_stems(graph: fx.Graph) -> list[fx.Node]:
    """2-D convolutions that read a model input of at most ``STEM_CHANNELS`` channels."""
    stems = []
    for node in graph.nodes:
        if _target(node) != "aten.conv2d.default":
            continue
        source = node.args[0]
        if not isinstance(source, fx.Node) or source.op != "placeholder":
            continue
        value = source.meta.get("val")
        channels = value.shape[1] if isinstance(value, torch.Tensor) and value.dim() == 4 else None
        if isinstance(channels, int) and channels <= STEM_CHANNELS:
            stems.append(node)
    return stems
