"""ONNX for TensorRT's parser: custom nodes only, so each reaches edgegate's plugin.

The parser imports a node by its op type, and it prefers a model-local function of that name to
the plugin registry: a TensorRT model must therefore carry no function named like a plugin op,
or TensorRT would inline the Scan fallback instead of calling the plugin. The plugin keeps the
scan state in fp32, so fp16 graphs get casts around the state.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from edgegate.errors import BadInput
from edgegate.exporters.onnx.functions import attach_functions, iter_nodes
from edgegate.exporters.onnx.schemas import DOMAIN
from edgegate.exporters.onnx.shapes import static_dims
from edgegate.exporters.onnx.weight_only import BLOCK_DQ_OPSET

PLUGIN_OPS = ("GatedLinearScan", "GatedLinearAttention", "GatedDeltaRule")
# What each creator's getFieldNames() lists: the only attributes the parser passes on.
PLUGIN_FIELDS: dict[str, list[str]] = {
    "GatedLinearScan": [],
    "GatedLinearAttention": ["scale"],
    "GatedDeltaRule": ["scale"],
}
MAX_PARSER_OPSET = 20  # the newest default-domain opset TensorRT 10.3's ONNX parser imports
MAX_HEAD_DIM = 128  # the kernels keep a state column of at most this many keys on chip


def plugin_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in iter_nodes(model.graph) if n.domain == DOMAIN]


def check_supported(model: onnx.ModelProto, example_shapes: list[list[int]]) -> None:
    """BadInput for a node the plugin library cannot run (an unknown op, a head dim over 128)."""
    dims = static_dims(model, example_shapes)
    for node in plugin_nodes(model):
        if node.op_type not in PLUGIN_OPS:
            raise BadInput(
                f"{node.op_type} has no TensorRT plugin (supported: {', '.join(PLUGIN_OPS)})"
            )
        if node.op_type == "GatedLinearScan":
            continue
        key, value = dims.get(node.input[0]), dims.get(node.input[2])
        head_dims = [d[3] for d in (key, value) if d is not None and len(d) == 4]
        if any(d is None or d > MAX_HEAD_DIM for d in head_dims) or len(head_dims) < 2:
            raise BadInput(
                f"{node.op_type} node '{node.name}' has key/value head dims "
                f"{[d[3] if d else None for d in (key, value)]}: the TensorRT plugin takes "
                f"at most {MAX_HEAD_DIM}"
            )


def _cast_state_to_fp32(model: onnx.ModelProto) -> None:
    """fp16 graphs: the plugin reads and writes an fp32 state, so cast around it (in place)."""
    graph = model.graph
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.domain != DOMAIN:
            nodes.append(node)
            continue
        required = {"GatedLinearScan": 2, "GatedLinearAttention": 4, "GatedDeltaRule": 5}
        if len(node.input) > required[node.op_type] and node.input[-1]:
            h0 = node.input[-1]
            nodes.append(helper.make_node("Cast", [h0], [f"{h0}__fp32"], to=TensorProto.FLOAT))
            node.input[-1] = f"{h0}__fp32"
        state = node.output[1]
        node.output[1] = f"{state}__fp32"
        nodes.append(node)
        nodes.append(helper.make_node("Cast", [f"{state}__fp32"], [state], to=TensorProto.FLOAT16))
    del graph.node[:]
    graph.node.extend(nodes)


def _holds_int4(model: onnx.ModelProto) -> bool:
    four_bit = (TensorProto.INT4, TensorProto.UINT4)
    return any(init.data_type in four_bit for init in model.graph.initializer)


def for_tensorrt(
    model: onnx.ModelProto, example_shapes: list[list[int]], *, fp16: bool = False
) -> onnx.ModelProto:
    """A copy of ``model`` ready for TensorRT: checked, plugin functions dropped, fp32 state."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    opset = next((o.version for o in model.opset_import if o.domain == ""), None)
    # opset 21 only for INT4 weight-only graphs (int4 DequantizeLinear with block_size), which
    # need a TensorRT whose parser reads it
    limit = BLOCK_DQ_OPSET if _holds_int4(model) else MAX_PARSER_OPSET
    if opset is not None and opset > limit:
        raise BadInput(f"the graph uses ONNX opset {opset}; TensorRT 10.3 parses up to opset 20")
    check_supported(model, example_shapes)
    keep = [f for f in model.functions if not (f.domain == DOMAIN and f.name in PLUGIN_OPS)]
    del model.functions[:]
    model.functions.extend(keep)
    if fp16 and plugin_nodes(model):
        _cast_state_to_fp32(model)
    onnx.checker.check_model(model, full_check=True)
    return model


def with_fallbacks(model: onnx.ModelProto) -> onnx.ModelProto:
    """The TensorRT model with its Scan fallbacks attached again, for ONNX Runtime (in memory)."""
    return attach_functions(onnx.ModelProto.FromString(model.SerializeToString()))
