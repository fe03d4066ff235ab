"""The `edgegate` ONNX domain: op schemas and the torch-op -> ONNX-node translations.

A translation emits a bare custom node through an onnxscript Opset whose schema is
registered with onnx.defs: an onnxscript *function* would be inlined by the exporter.
"""

from __future__ import annotations

import torch
from onnx import defs
from onnxscript import opset18 as op
from onnxscript import values

import edgegate.ops  # noqa: F401  registers torch.ops.edgegate.*

DOMAIN = "edgegate"
VERSION = 1
PLUGIN_ATTRS = {"plugin_namespace": DOMAIN, "plugin_version": "1"}
_T = ["tensor(float)", "tensor(float16)", "tensor(bfloat16)", "tensor(double)"]


# --------------------------------------------------------------------------------------
# 1. ONNX schemas (needed so onnxscript's Opset can build a bare node with 2 outputs)
# --------------------------------------------------------------------------------------


def _schema(name: str, inputs: list[str], with_scale: bool) -> defs.OpSchema:
    FP = defs.OpSchema.FormalParameter
    opt = defs.OpSchema.FormalParameterOption.Optional
    # the state has a type of its own: TensorRT's plugin keeps it in fp32 beside fp16 inputs
    ins = [FP(n, "S", param_option=opt) if n == "h0" else FP(n, "T") for n in inputs]
    outs = [FP("y" if name == "GatedLinearScan" else "o", "T"), FP("state", "S")]
    A = defs.OpSchema.Attribute
    attrs = [
        A(
            "plugin_namespace",
            defs.OpSchema.AttrType.STRING,
            "TensorRT plugin namespace",
            required=False,
        ),
        A(
            "plugin_version",
            defs.OpSchema.AttrType.STRING,
            "TensorRT plugin version",
            required=False,
        ),
    ]
    if with_scale:
        attrs.append(A("scale", defs.OpSchema.AttrType.FLOAT, "query scale", required=True))
    return defs.OpSchema(
        name,
        DOMAIN,
        VERSION,
        doc=f"edgegate::{name}",
        inputs=ins,
        outputs=outs,
        type_constraints=[("T", _T, "float types"), ("S", _T, "state float types")],
        attributes=attrs,
    )


SCHEMAS = {
    "GatedLinearScan": _schema("GatedLinearScan", ["x", "g", "h0"], False),
    "GatedLinearAttention": _schema("GatedLinearAttention", ["q", "k", "v", "g", "h0"], True),
    "GatedDeltaRule": _schema("GatedDeltaRule", ["q", "k", "v", "g", "beta", "h0"], True),
}


def register_schemas() -> None:
    for name, s in SCHEMAS.items():
        if not defs.has(name, DOMAIN):  # register_schema raises on a duplicate
            defs.register_schema(s)


register_schemas()
eg = values.Opset(DOMAIN, VERSION)  # eg.GatedLinearAttention resolves via onnx.defs.get_schema


# --------------------------------------------------------------------------------------
# 2. Translation functions (trace-only python functions; args are SymbolicTensors)
# --------------------------------------------------------------------------------------


def _zeros_like_shape(ref, shape):
    """zeros of `shape` (1-D int64 tensor) with ref's dtype."""
    return op.Expand(op.CastLike(op.Constant(value_float=0.0), ref), shape)


def _scan_h0(x):
    # [B,T,H,D] -> zeros [B,H,D]
    shape = op.Concat(op.Shape(x, start=0, end=1), op.Shape(x, start=2, end=4), axis=0)
    return _zeros_like_shape(x, shape)


def _attn_h0(q, v):
    # zeros [B,H,K,V] from q [B,T,H,K], v [B,T,H,V]
    shape = op.Concat(
        op.Shape(q, start=0, end=1),
        op.Shape(q, start=2, end=4),
        op.Shape(v, start=3, end=4),
        axis=0,
    )
    return _zeros_like_shape(q, shape)


def gated_linear_scan_onnx(x, g, h0=None):
    if h0 is None:  # always materialise the state so the node has a fixed arity
        h0 = _scan_h0(x)
    return eg.GatedLinearScan(x, g, h0, **PLUGIN_ATTRS)


def gated_linear_attention_onnx(q, k, v, g, h0=None, scale: float = 1.0):
    if h0 is None:
        h0 = _attn_h0(q, v)
    return eg.GatedLinearAttention(q, k, v, g, h0, scale=float(scale), **PLUGIN_ATTRS)


def gated_delta_rule_onnx(q, k, v, g, beta, h0=None, scale: float = 1.0):
    if h0 is None:
        h0 = _attn_h0(q, v)
    return eg.GatedDeltaRule(q, k, v, g, beta, h0, scale=float(scale), **PLUGIN_ATTRS)


def clipped_softmax_onnx(x, gamma: float, zeta: float = 1.0, dim: int = -1):
    """Standard ops: clip((zeta - gamma) * softmax(x) + gamma, 0, 1)."""
    p = op.Softmax(x, axis=dim)
    stretched = op.Add(
        op.Mul(p, op.CastLike(op.Constant(value_float=float(zeta - gamma)), x)),
        op.CastLike(op.Constant(value_float=float(gamma)), x),
    )
    return op.Clip(
        stretched,
        op.CastLike(op.Constant(value_float=0.0), x),
        op.CastLike(op.Constant(value_float=1.0), x),
    )


def log_sigmoid_onnx(x):
    """log(sigmoid(x)) as min(x, 0) - log(1 + exp(-|x|)), finite for every x.

    The exporter's own form is Log(Sigmoid(x)), and ONNX Runtime's Sigmoid flushes to 0 below
    about x = -20: log-space gates (GLA's logsigmoid decay, HGRN's forget gate) then become
    -inf where PyTorch gives x. Trained gates reach such values; random ones do not.
    """
    zero = op.CastLike(op.Constant(value_float=0.0), x)
    one = op.CastLike(op.Constant(value_float=1.0), x)
    return op.Sub(op.Min(x, zero), op.Log(op.Add(one, op.Exp(op.Neg(op.Abs(x))))))


def translation_table() -> dict:
    from edgegate.exporters.onnx.weight_only import weight_only_linear_onnx
    from edgegate.quant import weight_only_export  # noqa: F401  registers weight_only_linear

    E = torch.ops.edgegate
    return {
        E.weight_only_linear.default: weight_only_linear_onnx,
        E.gated_linear_scan.default: gated_linear_scan_onnx,
        E.gated_linear_attention.default: gated_linear_attention_onnx,
        E.gated_delta_rule.default: gated_delta_rule_onnx,
        E.clipped_softmax.default: clipped_softmax_onnx,
        torch.ops.aten.log_sigmoid.default: log_sigmoid_onnx,
    }


def auto_dims(args) -> tuple:
    """Dim.AUTO on every dim of every tensor arg (None for non-tensors)."""
    return tuple(
        {i: torch.export.Dim.AUTO for i in range(a.dim())} if isinstance(a, torch.Tensor) else None
        for a in args
    )
