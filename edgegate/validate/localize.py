"""First-divergence localisation: the PyTorch module where an ONNX export starts to differ.

Parity says *that* an export is wrong; this says *where*, in the user's own module names. The
reference runs with forward hooks on its submodules; the ONNX graph runs in onnxruntime with its
intermediate float values exposed as extra outputs (in memory); each module is matched to one
ONNX value, and the layers are judged one by one in the order their hooks fired.

Mapping rule. torch's dynamo exporter stamps each node with ``pkg.torch.onnx.name_scopes``: the
module paths it was traced under, then the op's own name. A module's ONNX value is the output
of the **last node in its scope (graph order) whose runtime shape equals the module's output
shape**, among values that depend on a graph input (weights and their Q/DQ are not layers).
Where the exporter folded one module into a node of another (Conv + BatchNorm becomes one Conv
scoped under the BatchNorm, reading the Conv's weight initializer), the module with no node of
its own takes the first node that reads its initializers (initializer names are parameter
names) and is judged against the output of the module whose scope holds that node
(``fused_into``): that value is where its weights act.

Tolerance per layer. Float exports: the precision's parity tolerance, relative to the layer's
output scale. INT8 exports (fake-quant torch vs the Q/DQ graph run as written): the error in
quantization steps of the layer's output, with the step taken from the DequantizeLinear that
writes the value, else the nearest QuantizeLinear downstream (fewest nodes away), or the step of
the nearest activation DequantizeLinear upstream of it when that grid is coarser (an error is not
counted finer than the grid it arrived on); a layer diverges past ``INT8_LAYER_STEPS`` steps.
"""

from __future__ import annotations

import ast
import contextlib
import math
import os
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from edgegate.exporters.onnx.functions import attach_functions
from edgegate.runtime import OnnxRuntimeRunner
from edgegate.validate.parity import Tolerance, output_parity

LOCALIZE_ROWS = 8  # parity rows the localisation runs on: enough to see a layer break
INT8_LAYER_STEPS = 4.0  # an INT8 layer diverges when off by more quantization steps than this
SCOPES_KEY = "pkg.torch.onnx.name_scopes"
_FLOAT_TYPES = {
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.FLOAT16: np.float16,
    onnx.TensorProto.DOUBLE: np.float64,
}


@dataclass(frozen=True)
class GraphIndex:
    """What the mapping needs to know about a graph, computed once."""

    nodes: list[onnx.NodeProto]
    scopes: list[tuple[str, ...]]  # per node: the module paths it was traced under
    producer: dict[str, int]  # value -> index of the node that writes it
    consumers: dict[str, list[int]]  # value -> indices of the nodes that read it
    constants: dict[str, np.ndarray]  # initializers and Constant outputs
    weights: dict[str, frozenset[str]]  # value computed from constants only -> initializers
    float_values: dict[str, Any]  # non-constant float value -> numpy dtype


@dataclass
class LayerError:
    module: str
    onnx_value: str
    onnx_node: str
    max_abs: float
    max_abs_rel: float  # max_abs over the layer's scale (max |reference|)
    snr_db: float
    allowed: float
    diverged: bool
    step: float | None = None  # INT8: the quantization step the error is counted in
    steps: float | None = None  # INT8: max_abs in steps
    fused_into: str | None = None  # judged on the output of this module (a folded node)


@dataclass
class Localization:
    rows: int
    layers: list[LayerError] = field(default_factory=list)
    unmapped: int = 0  # hooked modules with no ONNX value of their own shape

    @property
    def first_divergent(self) -> LayerError | None:
        return next((layer for layer in self.layers if layer.diverged), None)

    def to_dict(self) -> dict[str, Any]:
        first = self.first_divergent
        return {
            "rows": self.rows,
            "runtime": "onnxruntime (Q/DQ run as written)",
            "first_divergent": None
            if first is None
            else {k: getattr(first, k) for k in ("module", "onnx_node", "max_abs", "snr_db")},
            "layers": [asdict(layer) for layer in self.layers],
            "unmapped_modules": self.unmapped,
        }


class NotLocalizable(Exception):
    """The graph or reference offers nothing to map; the message says why."""


# --- the ONNX side -------------------------------------------------------------------------


def node_scopes(node: onnx.NodeProto) -> tuple[str, ...]:
    """Module paths a node was traced under, outermost first (the op's own name dropped)."""
    raw = next((p.value for p in node.metadata_props if p.key == SCOPES_KEY), None)
    if raw is None:
        return ()
    try:
        names = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return ()
    return tuple(str(n) for n in names[:-1] if n)


def _value_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every value shape inference can tell (exports usually record them)."""
    with contextlib.suppress(Exception):  # custom domains can stop it: keep what is recorded
        model = onnx.shape_inference.infer_shapes(model)
    graph = model.graph
    infos = [*graph.input, *graph.value_info, *graph.output]
    return {v.name: v.type.tensor_type.elem_type for v in infos if v.type.HasField("tensor_type")}


def index_graph(model: onnx.ModelProto) -> GraphIndex:
    """Producers, consumers, constants, weight-only values and exposable floats of a graph."""
    graph = model.graph
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    weights = {name: frozenset([name]) for name in constants}
    producer: dict[str, int] = {}
    consumers: dict[str, list[int]] = {}
    for i, node in enumerate(graph.node):
        inputs = [name for name in node.input if name]
        for name in inputs:
            consumers.setdefault(name, []).append(i)
        for name in node.output:
            producer[name] = i
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            tensor = next((a.t for a in node.attribute if a.name == "value"), None)
            if tensor is not None:
                constants[node.output[0]] = numpy_helper.to_array(tensor)
        if all(name in weights for name in inputs):
            sources = frozenset().union(*(weights[name] for name in inputs))
            weights.update({name: sources for name in node.output})
    types = _value_types(model)
    floats = {
        name: _FLOAT_TYPES[types[name]]
        for node in graph.node
        for name in node.output
        if name and name not in weights and types.get(name) in _FLOAT_TYPES
    }
    scopes = [node_scopes(node) for node in graph.node]
    return GraphIndex(list(graph.node), scopes, producer, consumers, constants, weights, floats)


def exposed(model: onnx.ModelProto, values: list[str], types: dict[str, Any]) -> bytes:
    """A copy of ``model`` whose graph also outputs ``values``, with scan fallbacks attached
    (a TensorRT kit's graph has none), serialized for an in-memory session."""
    copy = onnx.ModelProto.FromString(model.SerializeToString())
    attach_functions(copy)
    present = {o.name for o in copy.graph.output}
    for name in values:
        if name not in present:
            elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(types[name]))
            copy.graph.output.append(onnx.helper.make_tensor_value_info(name, elem, None))
    return copy.SerializeToString()


def run_exposed(
    path: Path, model: onnx.ModelProto, index: GraphIndex, feed: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Every scoped float value of the graph on ``feed``, as float32, Q/DQ run as written
    (the fake-quant reference computes the dequantized arithmetic, not fused kernels)."""
    values = [
        name
        for i, node in enumerate(index.nodes)
        if index.scopes[i]
        for name in node.output
        if name in index.float_values
    ]
    blob = exposed(model, values, index.float_values)
    with OnnxRuntimeRunner(path, fuse_qdq=False, model_bytes=blob) as runner:
        out = runner.run(feed)
    return {name: np.asarray(out[name], dtype=np.float32) for name in values if name in out}


# --- the torch side ------------------------------------------------------------------------


def _float_tensor(output: Any) -> torch.Tensor | None:
    """The float tensor a module returned: a brevitas QuantTensor's value, a tuple's first."""
    if isinstance(output, tuple | list) and output:
        output = output[0]
    output = getattr(output, "value", output)
    if isinstance(output, torch.Tensor) and output.is_floating_point():
        return output
    return None


def torch_layer_outputs(
    module: nn.Module, args: tuple[torch.Tensor, ...], paths: set[str]
) -> dict[str, np.ndarray]:
    """Output of each submodule in ``paths`` that ran exactly once, in the order the forward
    hooks fired (a module run twice has no single value to compare, so it is left out)."""
    seen: dict[str, np.ndarray | None] = {}
    calls: dict[str, int] = {}

    def hook(path: str):
        def record(_module: nn.Module, _inputs: Any, output: Any) -> None:
            calls[path] = calls.get(path, 0) + 1
            if path not in seen:
                tensor = _float_tensor(output)  # cloned: a later in-place op may change it
                seen[path] = None if tensor is None else tensor.detach().float().cpu().clone()

        return record

    handles = [
        sub.register_forward_hook(hook(path))
        for path, sub in module.named_modules()
        if path in paths
    ]
    try:
        with torch.no_grad():
            module(*args)
    finally:
        for handle in handles:
            handle.remove()
    return {p: t.numpy() for p, t in seen.items() if t is not None and calls[p] == 1}


# --- mapping -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerValue:
    """One module matched to one ONNX value, judged against ``judged_on``'s torch output."""

    module: str
    value: str
    node: str
    judged_on: str


def owner(initializer: str, modules: set[str]) -> str | None:
    """The deepest module whose path prefixes an initializer's name (its parameter's module)."""
    parts = initializer.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        path = ".".join(parts[:cut])
        if path in modules:
            return path
    return None


def _scoped_value(
    index: GraphIndex, module: str, shape: tuple[int, ...], shapes: dict[str, tuple]
) -> tuple[str, int] | None:
    """The last value in ``module``'s scope whose runtime shape is ``shape``."""
    for i in range(len(index.nodes) - 1, -1, -1):
        if module in index.scopes[i]:
            for name in index.nodes[i].output:
                if shapes.get(name) == shape:
                    return name, i
    return None


def _fused_value(
    index: GraphIndex,
    module: str,
    shape: tuple[int, ...],
    shapes: dict[str, tuple],
    modules: set[str],
) -> tuple[str, int] | None:
    """The first node outside ``module``'s scope that reads its initializers (a folded node)."""
    for i, node in enumerate(index.nodes):
        if not index.scopes[i] or module in index.scopes[i]:
            continue
        sources = set().union(*(index.weights.get(name, ()) for name in node.input))
        if any(owner(src, modules) == module for src in sources):
            return next(((o, i) for o in node.output if shapes.get(o) == shape), None)
    return None


def map_layers(
    index: GraphIndex,
    torch_out: dict[str, np.ndarray],
    onnx_out: dict[str, np.ndarray],
    modules: set[str],
) -> list[LayerValue]:
    """Each recorded module (hook order) matched to its ONNX value, by the module doc's rule."""
    shapes = {name: tuple(v.shape) for name, v in onnx_out.items()}
    mapped = []
    for module, ref in torch_out.items():
        hit = _scoped_value(index, module, ref.shape, shapes)
        judged_on = module
        if hit is None and (hit := _fused_value(index, module, ref.shape, shapes, modules)):
            host = index.scopes[hit[1]][-1]
            if host not in torch_out or torch_out[host].shape != ref.shape:
                continue
            judged_on = host
        if hit is not None:
            node = index.nodes[hit[1]]
            mapped.append(LayerValue(module, hit[0], node.name or node.op_type, judged_on))
    return mapped


# --- tolerance -----------------------------------------------------------------------------


def _scale_of(index: GraphIndex, node: onnx.NodeProto) -> float | None:
    scale = index.constants.get(node.input[1]) if len(node.input) > 1 else None
    return None if scale is None else float(np.abs(scale).max())


def _nearest(index: GraphIndex, value: str, op: str, downstream: bool) -> float | None:
    """Scale of the nearest ``op`` node (fewest nodes away), following data up or down."""
    queue, seen = deque([value]), {value}
    while queue:
        name = queue.popleft()
        if downstream:
            steps = [index.nodes[i] for i in index.consumers.get(name, [])]
        else:
            steps = [index.nodes[index.producer[name]]] if name in index.producer else []
        for node in steps:
            if node.op_type == op and (downstream or node.input[0] not in index.weights):
                return _scale_of(index, node)
            for nxt in node.output if downstream else node.input:
                if nxt and nxt not in seen and nxt not in index.weights:
                    seen.add(nxt)
                    queue.append(nxt)
    return None


def quant_step(index: GraphIndex, value: str) -> float | None:
    """The quantization step an INT8 layer's error is counted in (module doc); None if none.

    The layer's own step: the DequantizeLinear that writes the value, else the nearest
    QuantizeLinear downstream. An error cannot be judged on a grid finer than the one its
    input arrived on (a [0, 1] gate's 1/255 behind a coarse pre-activation), so the coarser of
    that and the nearest activation DequantizeLinear upstream of the layer's own quantizer."""
    producer = index.producer.get(value)
    start = value
    if producer is not None and index.nodes[producer].op_type == "DequantizeLinear":
        own = _scale_of(index, index.nodes[producer])
        start = index.nodes[producer].input[0]
    else:
        own = _nearest(index, value, "QuantizeLinear", downstream=True)
    upstream = _nearest(index, start, "DequantizeLinear", downstream=False)
    steps = [s for s in (own, upstream) if s]
    return max(steps) if steps else None


def judge(
    layer: LayerValue, ref: np.ndarray, cand: np.ndarray, precision: str, index: GraphIndex
) -> LayerError:
    """One layer's error against its tolerance (module doc: relative, or INT8 steps)."""
    metrics = output_parity(ref, cand)
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    step = quant_step(index, layer.value) if precision == "int8" else None
    if step:
        allowed = INT8_LAYER_STEPS * step
    else:
        allowed = Tolerance.for_precision(precision).allowed_abs(ref)
    return LayerError(
        module=layer.module,
        onnx_value=layer.value,
        onnx_node=layer.node,
        max_abs=metrics.max_abs,
        max_abs_rel=metrics.max_abs / scale if scale > 0 else metrics.max_abs,
        snr_db=metrics.snr_db,
        allowed=allowed,
        diverged=bool(metrics.max_abs > allowed or not math.isfinite(metrics.max_abs)),
        step=step or None,
        steps=metrics.max_abs / step if step else None,
        fused_into=layer.judged_on if layer.judged_on != layer.module else None,
    )


# --- the entry point -----------------------------------------------------------------------


def localize(
    reference: nn.Module,
    onnx_path: str | os.PathLike[str],
    reference_feed: dict[str, np.ndarray],
    candidate_feed: dict[str, np.ndarray],
    precision: str,
) -> Localization:
    """Layer-by-layer errors of the ONNX graph at ``onnx_path`` against ``reference``, on the
    first ``LOCALIZE_ROWS`` rows of the feeds (reference in float, candidate in its dtype).
    NotLocalizable when the graph carries no module scopes or nothing maps."""
    path = Path(onnx_path)
    model = onnx.load(os.fspath(path))
    index = index_graph(model)
    if not any(index.scopes):
        raise NotLocalizable(
            f"no node of {path.name} carries {SCOPES_KEY}: it was not written by torch's "
            "dynamo exporter, so its values cannot be traced to modules"
        )
    modules = {p for p, _ in reference.named_modules() if p}
    wanted = {s for scope in index.scopes for s in scope} & modules
    wanted |= {o for name in index.weights if (o := owner(name, modules))}
    ref_feed = {k: np.ascontiguousarray(v[:LOCALIZE_ROWS]) for k, v in reference_feed.items()}
    cand_feed = {k: np.ascontiguousarray(v[:LOCALIZE_ROWS]) for k, v in candidate_feed.items()}
    args = tuple(torch.from_numpy(v) for v in ref_feed.values())
    torch_out = torch_layer_outputs(reference, args, wanted)
    onnx_out = run_exposed(path, model, index, cand_feed)
    layers = map_layers(index, torch_out, onnx_out, modules)
    if not layers:
        raise NotLocalizable(f"no module of the reference maps to a value of {path.name}")
    rows = len(next(iter(cand_feed.values())))
    result = Localization(rows, unmapped=len(torch_out) - len(layers))
    for layer in layers:
        ref, cand = torch_out[layer.judged_on], onnx_out[layer.value]
        result.layers.append(judge(layer, ref, cand, precision, index))
    return result
