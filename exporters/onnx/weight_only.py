"""Weight-only layers in ONNX: the ``edgegate.WeightOnlyLinear`` node and its lowerings.

The exporter writes each W4 (or kept int8) layer as one ``WeightOnlyLinear`` node reading the
layer's integer codes, scales and zero points as initializers. A target then rewrites it
(``lower_weight_only``), from those same initializers, into what its runtime runs:
- ``matmulnbits``: ONNX Runtime's ``com.microsoft.MatMulNBits`` (4-bit codes packed two per
  byte along K, low nibble first; symmetric codes stored as code + 8 with the default zero
  point 8; asymmetric zero points packed the same way), ``accuracy_level`` as the target asks;
- ``blockdq``: standard ONNX, ``DequantizeLinear`` (opset 21) of an int4 (symmetric) or uint4
  weight [K, N] with ``block_size`` along K, feeding ``MatMul`` (TensorRT's INT4 weight-only
  form; ONNX Runtime runs it too).
Kept int8 layers become ``DequantizeLinear`` (per output channel) + ``MatMul`` in both forms.
A post-export rewrite, not a translation function: packing needs the initializers' values,
which a translation function does not see.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, defs, helper, numpy_helper

from edgegate.errors import InternalError

DOMAIN = "edgegate"
OP = "WeightOnlyLinear"
FORMS = ("matmulnbits", "blockdq")
BLOCK_DQ_OPSET = 21  # int4 / uint4 and DequantizeLinear's block_size
INT4_IR_VERSION = 10


@dataclass(frozen=True)
class WeightOnlyForm:
    """How a target runs weight-only layers: ``kind`` in ``FORMS``; ``accuracy_level`` is
    MatMulNBits' (0: the input's float type; 4: int8 activations inside the kernel)."""

    kind: str
    accuracy_level: int = 0


def _schema() -> defs.OpSchema:
    fp = defs.OpSchema.FormalParameter
    attr = defs.OpSchema.Attribute
    ints = defs.OpSchema.AttrType.INT
    return defs.OpSchema(
        OP,
        DOMAIN,
        1,
        doc="edgegate::weight_only_linear: x @ ((codes - zero_points) * scales)^T + bias",
        inputs=[
            fp("x", "T"),
            fp("codes", "tensor(int8)"),
            fp("scales", "T"),
            fp("zero_points", "tensor(int8)"),
            fp("bias", "T"),
        ],
        outputs=[fp("y", "T")],
        type_constraints=[("T", ["tensor(float)", "tensor(float16)"], "float types")],
        attributes=[
            attr("group_size", ints, "inputs per scale", required=True),
            attr("bits", ints, "code width", required=True),
            attr("symmetric", ints, "1: no zero points", required=True),
            attr("has_bias", ints, "1: add bias", required=True),
        ],
    )


if not defs.has(OP, DOMAIN):
    defs.register_schema(_schema())


def weight_only_linear_onnx(
    x, codes, scales, zero_points, bias, group_size: int, bits: int, symmetric: bool,
    has_bias: bool,
):  # fmt: skip
    """Translation of ``edgegate::weight_only_linear``: one bare edgegate node."""
    from onnxscript import values

    eg = values.Opset(DOMAIN, 1)
    return eg.WeightOnlyLinear(
        x,
        codes,
        scales,
        zero_points,
        bias,
        group_size=int(group_size),
        bits=int(bits),
        symmetric=int(symmetric),
        has_bias=int(has_bias),
    )


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    values = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.domain == "":
            for a in node.attribute:
                if a.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(a.t)
    return values


def pack_nibbles(values: np.ndarray) -> np.ndarray:
    """uint8 values in [0, 15] -> bytes, two per byte along the last axis, low nibble first
    (the last axis padded with 0 to an even length)."""
    values = values.astype(np.uint8)
    if values.shape[-1] % 2:
        values = np.concatenate([values, np.zeros((*values.shape[:-1], 1), np.uint8)], -1)
    return (values[..., 0::2] | (values[..., 1::2] << 4)).astype(np.uint8)


def lower_weight_only(model: onnx.ModelProto, form: WeightOnlyForm) -> onnx.ModelProto:
    """Rewrite every ``WeightOnlyLinear`` node of the main graph into ``form`` (a copy)."""
    if form.kind not in FORMS:
        raise InternalError(f"unknown weight-only form {form.kind!r}")
    nodes = [n for n in model.graph.node if n.domain == DOMAIN and n.op_type == OP]
    if not nodes:
        return model
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    values = _constants(model)
    new_nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    used_int4 = False
    for node in graph.node:
        if not (node.domain == DOMAIN and node.op_type == OP):
            new_nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        x, codes_name, scales_name, zp_name, bias_name = node.input
        try:
            codes, scales = values[codes_name], values[scales_name].astype(np.float32)
            zp, bias = values[zp_name], values[bias_name].astype(np.float32)
        except KeyError as exc:
            raise InternalError(f"{node.name}: weight-only input {exc} is not a constant") from None
        base = node.name or node.output[0]
        gs, bits = int(attrs["group_size"]), int(attrs["bits"])
        symmetric, has_bias = bool(attrs["symmetric"]), bool(attrs["has_bias"])
        bias_input = f"{base}__bias" if has_bias else ""
        if has_bias:
            inits.append(numpy_helper.from_array(bias, bias_input))
        if bits == 4 and form.kind == "matmulnbits":
            n_out, k = codes.shape
            blocks = k // gs
            stored = codes.astype(np.int16) + (8 if symmetric else 0)
            packed = pack_nibbles(stored.reshape(n_out, blocks, gs))
            inits.append(numpy_helper.from_array(packed, f"{base}__B"))
            inits.append(numpy_helper.from_array(scales.reshape(-1), f"{base}__scales"))
            zp_input = ""
            if not symmetric:
                zp_input = f"{base}__zero_points"
                inits.append(numpy_helper.from_array(pack_nibbles(zp).reshape(-1), zp_input))
            new_nodes.append(
                helper.make_node(
                    "MatMulNBits",
                    [x, f"{base}__B", f"{base}__scales", zp_input, "", bias_input],
                    list(node.output),
                    name=base,
                    domain="com.microsoft",
                    K=k,
                    N=n_out,
                    bits=4,
                    block_size=gs,
                    accuracy_level=form.accuracy_level,
                )
            )
            continue
        if bits == 4:  # blockdq: int4/uint4 [K, N], blocks of gs along K
            used_int4 = True
            dtype = TensorProto.INT4 if symmetric else TensorProto.UINT4
            weight = codes.T.astype(np.int8 if symmetric else np.uint8)
            inits.append(_four_bit(f"{base}__w", dtype, weight))
            inits.append(numpy_helper.from_array(np.ascontiguousarray(scales.T), f"{base}__s"))
            dq_inputs = [f"{base}__w", f"{base}__s"]
            if not symmetric:
                inits.append(_four_bit(f"{base}__zp", dtype, zp.T.astype(np.uint8)))
                dq_inputs.append(f"{base}__zp")
            dq_attrs = {"axis": 0, "block_size": gs}
        else:  # int8 per output channel: [K, N], one scale per column
            weight = codes.T.astype(np.int8)
            inits.append(numpy_helper.from_array(np.ascontiguousarray(weight), f"{base}__w"))
            inits.append(numpy_helper.from_array(scales.reshape(-1), f"{base}__s"))
            dq_inputs = [f"{base}__w", f"{base}__s"]
            dq_attrs = {"axis": 1}
        new_nodes.append(
            helper.make_node("DequantizeLinear", dq_inputs, [f"{base}__W"], **dq_attrs)
        )
        product = f"{base}__mm" if has_bias else node.output[0]
        new_nodes.append(helper.make_node("MatMul", [x, f"{base}__W"], [product]))
        if has_bias:
            new_nodes.append(helper.make_node("Add", [product, bias_input], [node.output[0]]))
    del graph.node[:]
    graph.node.extend(new_nodes)
    graph.initializer.extend(inits)
    _drop_unused(model)
    if form.kind == "matmulnbits" and not any(
        o.domain == "com.microsoft" for o in model.opset_import
    ):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    if used_int4:
        for opset in model.opset_import:
            if opset.domain == "" and opset.version < BLOCK_DQ_OPSET:
                opset.version = BLOCK_DQ_OPSET
        for function in model.functions:  # a function's opset imports must equal the model's
            for opset in function.opset_import:
                if opset.domain == "" and opset.version < BLOCK_DQ_OPSET:
                    opset.version = BLOCK_DQ_OPSET
        model.ir_version = max(model.ir_version, INT4_IR_VERSION)
    return model


def _four_bit(name: str, dtype: int, values: np.ndarray) -> onnx.TensorProto:
    """An int4/uint4 initializer stored raw: the flat tensor two values per byte, low nibble
    first (two's complement nibbles for int4), as ONNX packs 4-bit types."""
    raw = pack_nibbles((values.reshape(-1).astype(np.int16) & 0x0F)[None])[0]
    return helper.make_tensor(name, dtype, list(values.shape), raw.tobytes(), raw=True)


def _drop_unused(model: onnx.ModelProto) -> None:
    """Initializers and Constant nodes no node reads any more (the replaced layers' inputs)."""
    graph = model.graph
    read = {name for n in graph.node for name in n.input}
    read |= {o.name for o in graph.output}
    keep_nodes = [
        n for n in graph.node if not (n.op_type == "Constant" and n.output[0] not in read)
    ]
    del graph.node[:]
    graph.node.extend(keep_nodes)
    keep = [init for init in graph.initializer if init.name in read]
    del graph.initializer[:]
    graph.initializer.extend(keep)
