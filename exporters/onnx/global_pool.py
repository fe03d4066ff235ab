"""ReduceMean over both image axes of an NCHW tensor -> GlobalAveragePool.

torch.onnx writes ``adaptive_avg_pool2d(x, 1)`` and ``x.mean((2, 3), keepdim=True)``, the
squeeze-excitation pooling of every MobileNetV3 / EfficientNet, as ReduceMean. The two compute
the same mean, but ONNX Runtime has no integer ReduceMean: in an INT8 QDQ graph the pooling
leaves the integer domain (DQ -> ReduceMean -> Q, ~1 ms of mobilenet-v3-large-se's 5.3 at 224),
while DQ -> GlobalAveragePool -> Q fuses into QLinearGlobalAveragePool (2.5x faster per SE
pooling, the same output bits: benchmarks/probe_int8_gate_forms.py). TensorRT and the float
graphs lose nothing by it. A mean that drops the image axes (``x.mean((2, 3))``, a classifier
head's pooling) becomes GlobalAveragePool and Flatten, which ORT passes quantized tensors
through.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from edgegate.exporters.onnx.shapes import static_dims

IMAGE_AXES = ({2, 3}, {-2, -1}, {2, -1}, {-2, 3})
FLAT_SHAPE = "edgegate_pooled_flat_shape"  # [0, -1]: keep the batch, join the rest


def _axes(node: onnx.NodeProto, constants: dict[str, onnx.TensorProto]) -> set[int] | None:
    """ReduceMean's axes: the attribute (opset < 18) or a constant second input (18+)."""
    for attr in node.attribute:
        if attr.name == "axes":
            return set(attr.ints)
    if len(node.input) > 1 and node.input[1] in constants:
        return {int(a) for a in numpy_helper.to_array(constants[node.input[1]]).ravel()}
    return None


def _keeps_dims(node: onnx.NodeProto) -> bool:
    return all(attr.i != 0 for attr in node.attribute if attr.name == "keepdims")


def global_average_pools(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with every ReduceMean over axes 2 and 3 of a rank-4 tensor (of the main
    graph) replaced by GlobalAveragePool (then Flatten, where the mean drops those axes);
    ``model`` itself when there is none."""
    graph = model.graph
    constants = {t.name: t for t in graph.initializer}
    constants |= {
        n.output[0]: n.attribute[0].t
        for n in graph.node
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"
    }
    candidates = [
        n
        for n in graph.node
        if n.op_type == "ReduceMean"
        and n.domain in ("", "ai.onnx")
        and _axes(n, constants) in IMAGE_AXES
    ]
    if not candidates:
        return model
    dims = static_dims(model)
    freed: set[str] = set()
    flattens: list[tuple[onnx.NodeProto, onnx.NodeProto]] = []
    for node in candidates:
        if len(dims.get(node.input[0]) or ()) != 4:
            continue  # a rank we cannot read, or not NCHW: left as it is
        freed.update(node.input[1:])
        keeps = _keeps_dims(node)
        pooled_name = node.output[0] if keeps else f"{node.output[0]}_pooled"
        pooled = onnx.helper.make_node(
            "GlobalAveragePool", [node.input[0]], [pooled_name], name=node.name,
            doc_string=node.doc_string or None,
        )  # fmt: skip
        pooled.metadata_props.extend(node.metadata_props)  # the module it came from (--localize)
        if not keeps:  # [N, C, 1, 1] -> [N, C], as the mean without its image axes
            # Reshape, not Flatten: ORT moves a Q back through a Reshape onto the pool's output
            # (so the pool fuses), not through a Flatten
            if not flattens:
                shape = numpy_helper.from_array(np.array([0, -1], np.int64), FLAT_SHAPE)
                graph.initializer.append(shape)
            flat = onnx.helper.make_node(
                "Reshape", [pooled_name, FLAT_SHAPE], list(node.output), name=f"{node.name}_flat"
            )
            flat.metadata_props.extend(node.metadata_props)
            flattens.append((node, flat))
        node.CopyFrom(pooled)
    for pool, flat in flattens:  # each right after its pool, so the nodes stay sorted
        nodes = list(graph.node)
        graph.node.insert(nodes.index(pool) + 1, flat)
    _drop_unused(graph, freed)
    return model


def _drop_unused(graph: onnx.GraphProto, names: set[str]) -> None:
    """Remove the axes constants no node reads any more (ONNX Runtime warns about each)."""
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    unused = names - used
    keep = [t for t in graph.initializer if t.name not in unused]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    nodes = [n for n in graph.node if not (n.op_type == "Constant" and n.output[0] in unused)]
    del graph.node[:]
    graph.node.extend(nodes)
