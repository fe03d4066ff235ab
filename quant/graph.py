"""Graph-mode quantization: trace, fold BN, place brevitas quantizers by the profile's rules.

Compute layers become brevitas layers with quantized weights and inputs; where activations
are quantized follows the target profile (`_place_quantizers`: TensorRT on compute inputs and
residual adds; onnxruntime once per tensor, as its integer kernels pass tensors on). On top,
what a generic pass cannot know about gated networks:
- the tracer keeps `Gate`, softmax and the scan modules as leaves, so they stay findable;
- every gate output (`Gate` with role "gate", clipped or plain softmax) gets the fixed
  [0, 1] quantizer of `edgegate.quant.gates`, never a calibrated one;
- projections that feed a scan (q, k, v, log-decay and beta) stay float unless asked,
  because scan states compound the error of their inputs over time (design.md §4).
"""

from __future__ import annotations

import copy
import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from brevitas.nn import QuantConv1d, QuantConv2d, QuantIdentity, QuantLinear
from torch import fx, nn

from edgegate.errors import BadInput, EdgegateError, InternalError, raised_in_edgegate
from edgegate.models.blocks.attention import ClippedSoftmax
from edgegate.models.blocks.gate import Gate
from edgegate.models.lm import StreamingLM
from edgegate.quant.batch_norm import fold_batch_norm
from edgegate.quant.equalize import equalize_graph
from edgegate.quant.exported import is_exported, plain_graph_module
from edgegate.quant.gates import gate_output_quant
from edgegate.quant.integer_attention import (
    holds_attention,
    integer_attention_forms,
    integer_clipped_softmax,
    viewed_quantizer,
)
from edgegate.quant.integer_gates import (
    IntegerHardswish,
    fold_gate_offsets,
    folded_gate_user,
    integer_hardswish,
    saturating_gate,
)
from edgegate.quant.profiles import QuantProfile
from edgegate.quant.quantizers import act_quantizer, bias_quantizer, weight_quantizer
from edgegate.quant.tensorrt_placement import place_for_tensorrt
from edgegate.recognise import Recognition, recognise
from edgegate.recognise.graph import SCAN_TYPES, depends_on_input, plain_layer

LEAF_TYPES = (Gate, ClippedSoftmax, nn.Softmax, *SCAN_TYPES)
COMPUTE_TYPES = (nn.Conv1d, nn.Conv2d, nn.Linear)


@dataclass(frozen=True)
class QuantConfig:
    """Everything that decides how a model is quantized (the torchao-style config object)."""

    profile: QuantProfile
    method: str = "minmax"
    quantize_scan_inputs: bool = False
    # cross-layer equalization of the float graph, after BN folding (edgegate.quant.equalize)
    equalize: bool = False


class KeepFloat(nn.Module):
    """Wraps a layer so the graph passes see an opaque leaf and leave it in float."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return self.layer(*args)


def plain_norm_or_layer(module: nn.Module) -> bool:
    """A conv, linear or batch norm of any class that runs torch's own forward: traced as one
    leaf, so it quantizes and folds like the torch class (timm and torchvision subclass them)."""
    if plain_layer(module) is not None:
        return True
    norm = nn.modules.batchnorm._BatchNorm
    return isinstance(module, norm) and type(module).forward is norm.forward


class _GatedTracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, (*LEAF_TYPES, KeepFloat)) or plain_norm_or_layer(m):
            return True
        return super().is_leaf_module(m, qualname)


STATE_INPUT = "state{}"  # the streaming graph's state inputs: state0, state1, ... (one per layer)


class _StreamingTracer(_GatedTracer):
    """Traces ``StreamingLM.forward(tokens, *states)`` with one placeholder per layer state.

    FX turns a ``*states`` tail into one opaque placeholder, which the LM's forward cannot
    unpack; a fixed arity (``tokens, state0, ..., stateN-1``) makes each state a graph input
    of its own, which quantizers can be put on and ``torch.export`` can give its own dims.
    """

    def __init__(self, states: int) -> None:
        super().__init__()
        self.states = states

    def create_args_for_root(self, root_fn, is_module, concrete_args=None):
        names = ["tokens", *(STATE_INPUT.format(i) for i in range(self.states))]
        proxies = [self.create_proxy("placeholder", name, (), {}) for name in names]
        return root_fn, [self.root, *proxies] if is_module else proxies


def state_count(model: nn.Module) -> int:
    """How many state inputs a streaming LM takes (one per layer); 0 for any other model."""
    return len(model.lm.blocks) if isinstance(model, StreamingLM) else 0


def trace(model: nn.Module) -> fx.GraphModule:
    """FX graph of ``model`` with gates, softmaxes and scans as leaf modules (a streaming LM's
    states as explicit inputs)."""
    if is_exported(model):  # a .pt2 (or its plain graph): rewritten, FX cannot retrace it
        return plain_graph_module(model)
    states = state_count(model)
    tracer = _StreamingTracer(states) if states else _GatedTracer()
    try:
        graph = tracer.trace(model)
    except EdgegateError:
        raise
    except Exception as exc:  # FX reports data-dependent control flow as many error types
        message = f"cannot trace {type(model).__name__} for graph-mode quantization: {exc}"
        # the tracer's own code failed: a bug. FX refusing the model's code (a library's, or
        # edgegate's blocks in it) stays BadInput: callers fall back to torch.export on it.
        if raised_in_edgegate(exc, within="edgegate.quant"):
            raise InternalError(f"{message} (in edgegate's tracer)") from exc
        raise BadInput(message) from exc
    return fx.GraphModule(model, graph, type(model).__name__)


def scan_feeders(graph_module: fx.GraphModule) -> set[str]:
    """Qualified names of the compute layers whose outputs reach a scan op's inputs.

    Walks back from every scan call through view, activation and normalisation nodes, and
    stops at the first compute layer on each path (q, k, v, decay and beta projections).
    """
    modules = dict(graph_module.named_modules())
    feeders: set[str] = set()
    for node in graph_module.graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], SCAN_TYPES):
            continue
        stack, seen = list(node.all_input_nodes), set()
        while stack:
            producer = stack.pop()
            if producer in seen:
                continue
            seen.add(producer)
            if producer.op == "call_module":
                module = modules[producer.target]
                if plain_layer(module) is not None:
                    feeders.add(producer.target)
                    continue
                if isinstance(module, SCAN_TYPES):
                    continue
            stack.extend(producer.all_input_nodes)
    return feeders


MAX_STEM_CHANNELS = 4  # RGB, RGBA, grey: an image, not a feature map


def image_stems(graph_module: fx.GraphModule) -> set[str]:
    """The convs that read a graph input of at most ``MAX_STEM_CHANNELS`` channels directly
    (a vision model's stem; BN already folded into them)."""
    modules = dict(graph_module.named_modules())
    stems = set()
    for node in graph_module.graph.nodes:
        module = modules.get(node.target) if node.op == "call_module" else None
        if (
            plain_layer(module) in (nn.Conv1d, nn.Conv2d)
            and module.in_channels <= MAX_STEM_CHANNELS
            and node.args
            and isinstance(node.args[0], fx.Node)
            and node.args[0].op == "placeholder"
        ):
            stems.add(node.target)
    return stems


def _keep_float(model: nn.Module, names: set[str]) -> None:
    for name in names:
        replace_module(model, name, KeepFloat(model.get_submodule(name)))


def integer_outputs(profile: QuantProfile) -> bool:
    """Whether the profile quantizes what compute layers output: onnxruntime fuses DQ -> Conv
    -> Q into one integer kernel only when the output is quantized too; TensorRT quantizes only
    inputs and fuses the rest itself."""
    return profile.quantize_bias and profile.act_bits is not None


def _quant_layer(
    module: nn.Module, config: QuantConfig, input_quant: nn.Module | None = None
) -> nn.Module:
    """The brevitas twin of one compute layer, with the float weights copied in.

    ``input_quant`` shares the activation proxy that quantizes the input tensor already (one
    quantizer per tensor). A layer's output is quantized, where the profile wants it, by a
    quantizer of its own after the layer (`_place_quantizers`), not by the layer: a proxy
    inside the layer could not be shared, since brevitas's bias correction switches layer
    output quantizers off.
    """
    profile, method = config.profile, config.method
    weight_only = profile.act_bits is None  # Core ML's default: int8 weights, float compute
    if weight_only:
        inputs = None
    else:
        inputs = input_quant if input_quant is not None else act_quantizer(profile, method)
    kwargs = {
        "weight_quant": weight_quantizer(profile, method),
        "bias_quant": None if weight_only or module.bias is None else bias_quantizer(profile),
        "input_quant": inputs,
        "output_quant": None,
        "return_quant_tensor": False,
    }
    if isinstance(module, nn.Linear):
        layer = QuantLinear(
            module.in_features, module.out_features, module.bias is not None, **kwargs
        )
    else:
        cls = QuantConv2d if isinstance(module, nn.Conv2d) else QuantConv1d
        layer = cls(
            module.in_channels,
            module.out_channels,
            module.kernel_size,
            stride=module.stride,
            padding=module.padding,
            dilation=module.dilation,
            groups=module.groups,
            bias=module.bias is not None,
            padding_mode=module.padding_mode,
            **kwargs,
        )
    layer.load_state_dict(module.state_dict(), strict=False)
    return layer


def replace_module(root: nn.Module, name: str, module: nn.Module) -> None:
    """Put ``module`` at the dotted path ``name`` inside ``root``."""
    parent_name, _, attr = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, attr, module)


# Which activation proxy quantizes each tensor (FX node), and whether the node's value is that
# proxy's output already ("on grid": its consumers need no second Q/DQ) or only feeds it.
Quantized = dict[fx.Node, tuple[nn.Module, bool]]


def _quant_identity(quantizer: type | nn.Module) -> QuantIdentity:
    return QuantIdentity(act_quant=quantizer, return_quant_tensor=False)


def _insert_quant_after(
    graph_module: fx.GraphModule, node: fx.Node, name: str, quantizer: type, quantized: Quantized
) -> None:
    """Quantize ``node``'s output once, for every consumer."""
    module = _quant_identity(quantizer)
    graph_module.add_module(name, module)
    with graph_module.graph.inserting_after(node):
        quant_node = graph_module.graph.call_module(name, (node,))
    node.replace_all_uses_with(quant_node, delete_user_cb=_not(quant_node))
    quantized[quant_node] = (module.act_quant, True)


def _quantize_inputs(
    graph_module: fx.GraphModule,
    node: fx.Node,
    quantizer: type,
    tag: str,
    quantized: Quantized,
    share: bool,
) -> None:
    """A calibrated quantizer on each tensor input of ``node`` (matmul, residual add) that is
    not on a quantization grid already; with ``share``, one quantizer per tensor."""
    for i, arg in enumerate(node.args):
        if not isinstance(arg, fx.Node):
            continue
        known = quantized.get(arg)
        if known is not None and known[1]:
            continue  # already quantized (a gate output keeps its fixed [0, 1] quantizer)
        name = f"{node.name}_{tag}{i}"
        module = _quant_identity(known[0] if known and share else quantizer)
        graph_module.add_module(name, module)
        with graph_module.graph.inserting_before(node):
            quant_node = graph_module.graph.call_module(name, (arg,))
        node.replace_input_with(arg, quant_node)
        if share and known is None:
            quantized[arg] = (module.act_quant, False)


_MATMULS = {operator.matmul, torch.matmul, torch.bmm}
_ADDS = {operator.add, torch.add}
_RELUS = {F.relu, torch.relu}


def _is_activation(arg: object) -> bool:
    """A residual add joins two activations; ``x + parameter`` is a bias add, left alone, and
    so is integer arithmetic (a captured program's positions: ``arange(T) + past_length``)."""
    return (
        isinstance(arg, fx.Node)
        and arg.op != "get_attr"
        and _floating(arg)
        and depends_on_input(arg)
    )


def _floating(node: fx.Node) -> bool:
    """Whether ``node`` is a float tensor; True when the graph records no value (FX traces)."""
    value = node.meta.get("val", node.meta.get("tensor_meta"))
    if value is None:
        return True
    dtype = getattr(value, "dtype", None)
    return dtype is not None and dtype.is_floating_point


def _sole_relu_user(node: fx.Node, modules: dict[str, nn.Module]) -> fx.Node | None:
    """The ReLU that is the only consumer of ``node``, if there is one."""
    if len(node.users) != 1:
        return None
    user = next(iter(node.users))
    is_relu = (
        (user.op == "call_module" and isinstance(modules.get(user.target), nn.ReLU))
        or (user.op == "call_function" and user.target in _RELUS)
        or (user.op == "call_method" and user.target == "relu")
    )
    return user if is_relu else None


def _place_quantizers(graph_module: fx.GraphModule, config: QuantConfig) -> None:
    """Swap compute layers for brevitas layers; quantize matmul and residual-add inputs.

    Under profiles with integer outputs (onnxruntime) each tensor is quantized once, as the
    runtime's integer kernels pass it on: a layer whose input is on a grid already (a previous
    layer's output, a gate) shares that quantizer and adds no second Q/DQ, which would only
    requantize; a conv or linear whose one consumer is a ReLU is quantized after the ReLU,
    which the runtime folds into the kernel; a residual add quantizes its output, so that it
    runs as one integer add.
    """
    modules = dict(graph_module.named_modules())
    profile = config.profile
    act = act_quantizer(profile, config.method)
    weight_only = profile.act_bits is None
    share = integer_outputs(profile)
    # attention graphs: a layer reading a view of a quantized tensor shares its quantizer
    views = share and profile.integer_attention and holds_attention(graph_module)
    quantized: Quantized = {}
    for node in list(graph_module.graph.nodes):
        module = modules.get(node.target) if node.op == "call_module" else None
        if isinstance(module, QuantIdentity):
            quantized[node] = (module.act_quant, True)
        elif module is not None and plain_layer(module) is not None:
            source = node.args[0]
            known = quantized.get(source) if share else None
            if known is None and views:
                known = viewed_quantizer(source, quantized)
            layer = _quant_layer(module, config, known[0] if known else None)
            layer.input_on_grid = bool(known and known[1])  # read by quant.qdq
            # a [B, T, C] linear as a 2D Gemm, which ORT fuses with its Q/DQ into one QGemm
            layer.gemm_2d = profile.integer_attention  # read by quant.qdq
            replace_module(graph_module, node.target, layer)
            if not share:
                continue
            if known is None:
                quantized[source] = (layer.input_quant, False)
            relu = _sole_relu_user(node, modules)
            if folded_gate_user(node, modules):
                continue  # the gate's own 6/255 quantizer is this layer's output quantizer
            if relu is not None:
                non_negative = act_quantizer(profile, config.method, non_negative=True)
                _insert_quant_after(
                    graph_module, relu, f"{relu.name}_quant", non_negative, quantized
                )
            else:
                _insert_quant_after(graph_module, node, f"{node.name}_output_quant", act, quantized)
        elif isinstance(module, IntegerHardswish):
            _insert_quant_after(graph_module, node, f"{node.name}_output_quant", act, quantized)
        elif node.op in ("call_function", "call_method") and not weight_only:
            if node.target in _MATMULS or node.target in ("matmul", "bmm"):
                _quantize_inputs(graph_module, node, act, "input_quant", quantized, share)
            elif (
                profile.qdq_on_residual_adds
                and (node.target in _ADDS or node.target == "add")
                and all(_is_activation(a) for a in node.args[:2])
            ):
                _quantize_inputs(graph_module, node, act, "residual_quant", quantized, share)
                if share:
                    _insert_quant_after(graph_module, node, f"{node.name}_quant", act, quantized)
    if not share and not weight_only:  # TensorRT: its fusion rules on top (own module)
        place_for_tensorrt(graph_module, profile, config.method)
    graph_module.graph.lint()
    graph_module.recompile()


def _not(excluded: fx.Node):
    return lambda user: user is not excluded


def _insert_gate_quant(
    graph_module: fx.GraphModule, profile: QuantProfile, recognition: Recognition
) -> list[dict[str, str]]:
    """A fixed-range [0, 1] quantizer after every recognised gate output; returns each gate's
    record with the name of its quantizer module. Under profiles with ``integer_gates`` a
    hard-sigmoid gate becomes a saturating requantization instead (`SaturatingHardSigmoid`),
    which puts its output on the same [0, 1] grid."""
    names = set(dict(graph_module.named_modules()))
    records = []
    for found in recognition.found:
        node = found.node
        base = node.target if node.op == "call_module" else f"{found.path}.{node.name}"
        name = f"{str(base).strip('.').replace('.', '_')}_gate_quant"
        while name in names:
            name = f"{name}_"
        names.add(name)
        records.append({**found.to_dict(), "node": node.name, "quantizer": name})
        if profile.integer_gates and found.kind == "hardsigmoid":
            saturating_gate(graph_module, node, name)
            continue
        graph_module.add_module(name, gate_output_quant(profile))
        with graph_module.graph.inserting_after(node):
            quant_node = graph_module.graph.call_module(name, (node,))
        node.replace_all_uses_with(quant_node, delete_user_cb=_not(quant_node))
    graph_module.graph.lint()
    graph_module.recompile()
    return records


def _integer_gate_forms(graph_module: fx.GraphModule) -> None:
    """Hard-swish after a conv or linear as `IntegerHardswish`, and each saturating gate's +3
    folded into the layer before it (``integer_gates`` profiles; edgegate.quant.integer_gates).
    Only a hard-swish whose input is a compute layer's (quantized) output: elsewhere its input
    may be float by design (a scan region), and the integer form would quantize it."""
    modules = dict(graph_module.named_modules())
    integer_hardswish(
        graph_module,
        lambda node: node.op == "call_module" and plain_layer(modules.get(node.target)) is not None,
    )
    fold_gate_offsets(graph_module, lambda layer: plain_layer(layer) is not None)
    graph_module.delete_all_unused_submodules()  # the float hard-swish and gate modules


def _insert_state_quant(graph_module: fx.GraphModule, config: QuantConfig) -> int:
    """A calibrated activation quantizer on every state input of a streaming graph (only when
    the profile quantizes states); returns how many. Its range must come from states reached
    over whole sequences (``edgegate.quant.calibrate.calibrate_streaming``), not from zeros."""
    if config.profile.state_bits is None or config.profile.act_bits is None:
        return 0
    quantizer = act_quantizer(config.profile, config.method)
    placeholders = [n for n in graph_module.graph.nodes if n.op == "placeholder"][1:]
    for node in placeholders:
        name = f"{node.target}_state_quant"
        graph_module.add_module(name, QuantIdentity(act_quant=quantizer, return_quant_tensor=False))
        with graph_module.graph.inserting_after(node):
            quant_node = graph_module.graph.call_module(name, (node,))
        node.replace_all_uses_with(quant_node, delete_user_cb=_not(quant_node))
    graph_module.graph.lint()
    graph_module.recompile()
    return len(placeholders)


def state_quantizers(model: nn.Module) -> dict[str, nn.Module]:
    """The state-input quantizers of a streaming graph by module name, in state order."""
    found = {n: m for n, m in model.named_children() if n.endswith("_state_quant")}
    return dict(sorted(found.items(), key=lambda item: int(item[0][5:].split("_")[0])))


def gate_record(gates: list[dict], recognition: Recognition) -> dict[str, list[dict]]:
    """What report.json and the manifest say about gates: each recognised one (with its
    quantizer), the gate-like ops left unrecognised (warned), those left float by design."""
    return {
        "recognised": gates,
        "unrecognised": [item.to_dict() for item in recognition.leftovers if item.warn],
        "left_float": [item.to_dict() for item in recognition.leftovers if not item.warn],
    }


def check_config(config: QuantConfig) -> None:
    """BadInput for a configuration graph-mode PTQ cannot apply (before any work is done)."""
    weight_quantizer(config.profile, config.method)
    if config.profile.act_bits is not None:
        act_quantizer(config.profile, config.method)


def quantize_model(
    model: nn.Module, config: QuantConfig, example: tuple[torch.Tensor, ...] | None = None
) -> fx.GraphModule:
    """Fake-quant copy of ``model`` (eval mode, BN folded), ready for calibration.

    Under ``config.equalize`` the float graph is equalized after BN folding, and ``example``
    inputs (the model's) check that it still computes the same; the record is the result's
    ``equalization`` attribute."""
    check_config(config)
    # a .pt2 becomes its plain graph first (a copy), so layers are found and kept by name
    model = plain_graph_module(model) if is_exported(model) else copy.deepcopy(model).eval()
    if not config.quantize_scan_inputs:
        _keep_float(model, scan_feeders(trace(model)))
    graph_module = trace(model)
    fold_batch_norm(graph_module)
    if config.equalize:  # on the folded weights: those are the ones quantized
        graph_module.equalization = equalize_graph(graph_module, example)
    if config.profile.float_image_stem:
        _keep_float(graph_module, image_stems(graph_module))
    recognition = recognise(graph_module)
    # gates first, so matmul inputs that are gate outputs are not re-quantized by a calibrated
    # quantizer on top of the fixed [0, 1] one
    if config.profile.act_bits is not None:  # weight-only profiles leave activations float
        gates = _insert_gate_quant(graph_module, config.profile, recognition)
    else:
        gates = [
            {**found.to_dict(), "node": found.node.name, "quantizer": None}
            for found in recognition.found
        ]
    graph_module.gate_record = gate_record(gates, recognition)
    if config.profile.integer_gates and config.profile.act_bits is not None:
        _integer_gate_forms(graph_module)
    if state_count(model):
        _insert_state_quant(graph_module, config)
    # attention blocks in ORT's integer kernels (edgegate.quant.integer_attention)
    attention = config.profile.integer_attention and holds_attention(graph_module)
    if attention:
        integer_clipped_softmax(graph_module)
    _place_quantizers(graph_module, config)
    if attention:
        integer_attention_forms(graph_module, act_quantizer(config.profile, config.method))
    return graph_module.eval()
