"""Which integer forms of hard-swish and the SE gate ONNX Runtime's CPU provider runs fastest.

Usage: .venv/bin/python benchmarks/probe_int8_gate_forms.py [--rounds 300 --threads 2]
       [--profile-runs 30] [--quick] [--json-out forms.json]

A measurement spike for issue 22 (INT8 that pays). edgegate's INT8 QDQ export of
mobilenet-v3-large-se leaves the integer domain at every hard-swish (QLinearConv -> DQ ->
HardSigmoid -> Mul -> Q) and at every SE block (DQ -> ReduceMean -> Q ... DQ -> HardSigmoid -> Q).
This builds each piece alone with onnx.helper at the model's shapes at 224x224, in several
forms, and for each form reports ORT's kernel time per op type (its profiler), the wall time
(median over interleaved rounds) and how far its uint8 output is from two references:

- ``today``: the fake-quant arithmetic of the graph edgegate exports now (dequantize, float op,
  quantize; what ``validate`` compares with);
- ``staged``: the form's own fake-quant arithmetic (each integer tensor it adds rounded where the
  form rounds it), which a brevitas model could reproduce exactly.

Each piece sits between two identity depthwise QLinearConvs, so that ORT lays it out as in the
whole model (NHWC, with one transpose at each graph edge); their time is left out of the piece's
kernel time, and is in both sides of the wall-time ratio. Sigmoid gates (not in MobileNetV3) are
probed too, for the GC model and gated attention. Differences are in quantization steps of the
output. Activations are u8 asymmetric per tensor,
weights s8 per channel: the ``onnxruntime`` profile (edgegate.quant.profiles).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling modules, however loaded
import ort_profile  # noqa: E402

MS = "com.microsoft"
OPSETS = [helper.make_opsetid("", 20), helper.make_opsetid(MS, 1)]
U8 = TensorProto.UINT8
GATE_SCALE = 1.0 / 255.0  # hard-sigmoid output [0, 1] as u8, zero point 0
SIX_SCALE = 6.0 / 255.0  # relu6(x + 3) as u8: saturation at 255 is the clip at 6

# mobilenet-v3-large-se at 224x224: (channels, side) -> count, from edgegate's QDQ export
HSWISH_SHAPES = {
    (16, 112): 1,
    (240, 28): 1,
    (240, 14): 1,
    (200, 14): 2,
    (184, 14): 4,
    (480, 14): 2,
    (672, 14): 3,
    (672, 7): 1,
    (960, 7): 5,
    (1280, 1): 1,
}
# sigmoid gates are not in this model (count 0): shapes of the same sizes, for the GC model
SIGMOID_SHAPES = {(240, 28): 0, (960, 7): 0}
# SE blocks: (channels, squeeze channels, side) -> count
SE_SHAPES = {(72, 24, 28): 1, (120, 32, 28): 2, (480, 120, 14): 1, (672, 168, 14): 1,
             (672, 168, 7): 1, (960, 240, 7): 2}  # fmt: skip


@dataclass(frozen=True)
class Q:
    """A u8 per-tensor quantization: scale and zero point."""

    scale: float
    zero: int

    def deq(self, q: np.ndarray) -> np.ndarray:
        return (q.astype(np.float32) - np.float32(self.zero)) * np.float32(self.scale)

    def quant(self, x: np.ndarray) -> np.ndarray:
        # np.rint rounds half to even, as ONNX QuantizeLinear does
        return np.clip(np.rint(x / np.float32(self.scale)) + self.zero, 0, 255).astype(np.uint8)

    @staticmethod
    def of_range(lo: float, hi: float) -> Q:
        scale = (hi - lo) / 255.0
        return Q(scale, int(np.clip(np.rint(-lo / scale), 0, 255)))


@dataclass
class Graph:
    """Nodes and initializers of one small model under construction."""

    nodes: list = field(default_factory=list)
    inits: list = field(default_factory=list)

    def const(self, name: str, value, dtype=np.float32) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def qparams(self, name: str, q: Q) -> tuple[str, str]:
        return self.const(f"{name}_s", q.scale), self.const(f"{name}_z", q.zero, np.uint8)

    def node(self, op: str, inputs: list[str], output: str, domain: str = "", **attrs) -> str:
        node = helper.make_node(op, inputs, [output], name=output, domain=domain, **attrs)
        self.nodes.append(node)
        return output

    def identity_conv(self, x: str, q: Q, channels: int, output: str) -> str:
        """A depthwise 1x1 QLinearConv that passes u8 values through unchanged."""
        ins = [x, *self.qparams(f"{output}_in", q)]
        ins += [self.const(f"{output}_w", np.ones((channels, 1, 1, 1)), np.int8)]
        ins += [self.const(f"{output}_ws", 1.0), self.const(f"{output}_wz", 0, np.int8)]
        ins += [*self.qparams(f"{output}_out", q)]
        return self.node("QLinearConv", ins, output, group=channels)

    def model(self, inputs: dict[str, list[int]], output: str) -> onnx.ModelProto:
        # every piece probed here keeps its input's shape
        shape = next(iter(inputs.values()))
        graph = helper.make_graph(
            self.nodes,
            "probe",
            [helper.make_tensor_value_info(n, U8, s) for n, s in inputs.items()],
            [helper.make_tensor_value_info(output, U8, shape)],
            self.inits,
        )
        model = helper.make_model(graph, opset_imports=OPSETS, ir_version=10)
        onnx.checker.check_model(model)
        return model


# ---------------------------------------------------------------- hard-swish


def hswish(x: np.ndarray) -> np.ndarray:
    return x * np.clip(x + 3.0, 0.0, 6.0) / 6.0


def relu6_plus3(q: np.ndarray, qq: Q) -> np.ndarray:
    """QLinearAdd(q, 3) into u8 at 6/255, zero point 0, in the kernel's own order of float
    operations (each input times its scale over the output's, then round half to even), so
    that values on a rounding tie round as ORT rounds them."""
    ratio = np.float32(qq.scale) / np.float32(SIX_SCALE)
    add = (q.astype(np.float32) - np.float32(qq.zero)) * ratio + np.float32(3.0 / SIX_SCALE)
    return np.clip(np.rint(add), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class HswishCase:
    """Hard-swish of a QLinearConv's u8 output ``t`` into a u8 output ``y``."""

    # calibration-like ranges; not round numbers, whose scale ratios would put many values on
    # exact rounding ties
    t: Q = Q.of_range(-7.31, 9.87)
    y: Q = Q.of_range(-0.375, 9.87)

    def today_ref(self, t: np.ndarray) -> np.ndarray:
        return self.y.quant(hswish(self.t.deq(t)))

    def staged_ref(self, t: np.ndarray) -> np.ndarray:
        """The QLinearAdd/QLinearMul form's arithmetic: relu6(t + 3) rounded to u8 at 6/255,
        evaluated as QLinearAdd does (each input times its scale over the output's)."""
        gate = relu6_plus3(t, self.t)
        return self.y.quant(self.t.deq(t) * Q(GATE_SCALE, 0).deq(gate))


def hswish_today(c: HswishCase, g: Graph) -> str:
    """Today's export after ORT's fusions: DQ -> HardSigmoid -> Mul -> Q."""
    x = g.node("DequantizeLinear", ["t", *g.qparams("t", c.t)], "tf")
    h = g.node("HardSigmoid", [x], "hs", alpha=1.0 / 6.0, beta=0.5)
    m = g.node("Mul", [x, h], "m")
    return g.node("QuantizeLinear", [m, *g.qparams("y", c.y)], "y")


def hswish_op(c: HswishCase, g: Graph) -> str:
    """DQ -> HardSwish -> Q (ORT has no HardSwish kernel: it inlines the function)."""
    x = g.node("DequantizeLinear", ["t", *g.qparams("t", c.t)], "tf")
    h = g.node("HardSwish", [x], "h")
    return g.node("QuantizeLinear", [h, *g.qparams("y", c.y)], "y")


def hswish_qlinear(c: HswishCase, g: Graph) -> str:
    """QLinearAdd(t, 3) into [0, 6] at zero point 0 (the clip is the u8 saturation), then
    QLinearMul(t, gate) reading the same gate bytes at scale 1/255: the 1/6 is in the scale."""
    ts, tz = g.qparams("t", c.t)
    three = [g.const("three", [255], np.uint8), *g.qparams("three", Q(3.0 / 255.0, 0))]
    six = g.qparams("six", Q(SIX_SCALE, 0))
    gate = g.node("QLinearAdd", ["t", ts, tz, *three, *six], "gate", domain=MS)
    unit = g.qparams("unit", Q(GATE_SCALE, 0))
    return g.node("QLinearMul", ["t", ts, tz, gate, *unit, *g.qparams("y", c.y)], "y", domain=MS)


def hswish_qdq(c: HswishCase, g: Graph) -> str:
    """The QLinear form written as Q/DQ, for ORT's QDQ fusions to turn into QLinearAdd/Mul."""
    x = g.node("DequantizeLinear", ["t", *g.qparams("t", c.t)], "tf")
    three = g.node(
        "DequantizeLinear",
        [g.const("three", [255], np.uint8), *g.qparams("three", Q(3.0 / 255.0, 0))],
        "three_f",
    )
    add = g.node("Add", [x, three], "add")
    gate = g.node("QuantizeLinear", [add, *g.qparams("six", Q(SIX_SCALE, 0))], "gate")
    unit = g.node("DequantizeLinear", [gate, *g.qparams("unit", Q(GATE_SCALE, 0))], "unit")
    m = g.node("Mul", [x, unit], "m")
    return g.node("QuantizeLinear", [m, *g.qparams("y", c.y)], "y")


def hswish_lut(c: HswishCase, g: Graph) -> str:
    """A 256-entry table of today's fake-quant hard-swish: Cast to int32, Gather."""
    table = g.const("table", c.today_ref(np.arange(256, dtype=np.uint8)), np.uint8)
    idx = g.node("Cast", ["t"], "idx", to=TensorProto.INT32)
    return g.node("Gather", [table, idx], "y", axis=0)


HSWISH_FORMS: dict[str, tuple[Callable, str | None]] = {
    # form -> (builder, the reference its output is compared with besides today's)
    "today_dq_hsig_mul_q": (hswish_today, None),
    "dq_hardswish_q": (hswish_op, None),
    "qlinear_add_mul": (hswish_qlinear, "staged"),
    "qdq_add_mul_fused": (hswish_qdq, "staged"),
    "lut_cast_gather": (hswish_lut, None),
}


# ---------------------------------------------------------------- sigmoid gate (not in MobileNetV3:
# the GC model's gate head and gated attention's output gates)


@dataclass(frozen=True)
class SigmoidCase:
    """A sigmoid gate on a u8 ``t`` into [0, 1] as u8 at 1/255, zero point 0."""

    t: Q = Q.of_range(-7.31, 9.87)
    y: Q = Q(GATE_SCALE, 0)

    def today_ref(self, t: np.ndarray) -> np.ndarray:
        return self.y.quant(1.0 / (1.0 + np.exp(-self.t.deq(t))))


def sigmoid_today(c: SigmoidCase, g: Graph) -> str:
    x = g.node("DequantizeLinear", ["t", *g.qparams("t", c.t)], "tf")
    return g.node("QuantizeLinear", [g.node("Sigmoid", [x], "sig"), *g.qparams("y", c.y)], "y")


def sigmoid_qlinear(c: SigmoidCase, g: Graph) -> str:
    """com.microsoft.QLinearSigmoid: ORT's kernel for it is a 256-entry table built at load."""
    ins = ["t", *g.qparams("t", c.t), *g.qparams("y", c.y)]
    return g.node("QLinearSigmoid", ins, "y", domain=MS)


SIGMOID_FORMS: dict[str, tuple[Callable, str | None]] = {
    "today_dq_sigmoid_q": (sigmoid_today, None),
    "qlinear_sigmoid": (sigmoid_qlinear, None),
}


# ---------------------------------------------------------------- SE block


@dataclass
class SeCase:
    """An SE block on u8 ``x`` [1, C, H, W]: pool, 1x1 conv + ReLU, 1x1 conv, hard-sigmoid,
    channel gate; s8 per-channel weights, int32 biases, calibration-like ranges."""

    channels: int
    squeeze: int
    x: Q = Q.of_range(-0.375, 6.0)
    seed: int = 0

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        c, s = self.channels, self.squeeze
        self.w1 = rng.integers(-127, 128, (s, c, 1, 1)).astype(np.int8)
        self.w2 = rng.integers(-127, 128, (c, s, 1, 1)).astype(np.int8)
        self.pool = Q.of_range(-0.375, 3.0)
        self.s_w1 = (rng.uniform(0.5, 1.5, s) * 4.0 / (127 * np.sqrt(c))).astype(np.float32)
        self.s_w2 = (rng.uniform(0.5, 1.5, c) * 8.0 / (127 * np.sqrt(s))).astype(np.float32)
        self.h = Q(6.0 / 255.0, 0)  # ReLU output: zero point 0, so the ReLU is the saturation
        self.z = Q.of_range(-7.63, 8.21)  # the excite conv's output, before the hard-sigmoid
        self.b1 = rng.integers(-200, 200, s).astype(np.int32)
        self.b2 = rng.integers(-200, 200, c).astype(np.int32)
        # relu6(z + 3) with the + 3 in the excite conv's int32 bias (rounded to its grid)
        self.b2_plus3 = (self.b2 + np.rint(3.0 / (self.h.scale * self.s_w2))).astype(np.int32)
        self.y = Q.of_range(-0.375, 6.0)

    def _conv(self, q: np.ndarray, zero: int, w: np.ndarray, b: np.ndarray, s_in: float, s_w):
        """A 1x1 conv on a [C] u8 vector as QLinearConv computes it: the int32 accumulator,
        then the real value it stands for."""
        acc = w[:, :, 0, 0].astype(np.int64) @ (q.astype(np.int64) - zero) + b
        return acc.astype(np.float32) * (np.float32(s_in) * s_w)

    def _squeeze(self, x: np.ndarray) -> np.ndarray:
        pooled = self.pool.quant(self.x.deq(x).mean(axis=(2, 3))[0])
        h = self.h.quant(self._conv(pooled, self.pool.zero, self.w1, self.b1, self.pool.scale,
                                    self.s_w1))  # fmt: skip
        return h

    def _gated(self, x: np.ndarray, gate: np.ndarray) -> np.ndarray:
        g = Q(GATE_SCALE, 0).deq(gate)[None, :, None, None]
        return self.y.quant(self.x.deq(x) * g)

    def today_ref(self, x: np.ndarray) -> np.ndarray:
        h = self._squeeze(x)
        z = self.z.quant(self._conv(h, 0, self.w2, self.b2, self.h.scale, self.s_w2))
        gate = Q(GATE_SCALE, 0).quant(np.clip(self.z.deq(z) / 6.0 + 0.5, 0.0, 1.0))
        return self._gated(x, gate)

    def staged_ref(self, x: np.ndarray) -> np.ndarray:
        """Folded form: the excite conv writes relu6(z + 3) at 6/255 straight from int32."""
        h = self._squeeze(x)
        gate = Q(SIX_SCALE, 0).quant(
            self._conv(h, 0, self.w2, self.b2_plus3, self.h.scale, self.s_w2)
        )
        return self._gated(x, gate)

    def staged_add_ref(self, x: np.ndarray) -> np.ndarray:
        """QLinearAdd form: z rounded at its own scale, then relu6(z + 3) at 6/255."""
        h = self._squeeze(x)
        z = self.z.quant(self._conv(h, 0, self.w2, self.b2, self.h.scale, self.s_w2))
        gate = relu6_plus3(z, self.z)
        return self._gated(x, gate)


def _qconv(c: SeCase, g: Graph, x: str, xq: Q, name: str, w, s_w, b, out: Q) -> str:
    ins = [x, *g.qparams(f"{name}_in", xq), g.const(f"{name}_w", w, np.int8)]
    ins += [g.const(f"{name}_ws", s_w), g.const(f"{name}_wz", np.zeros(len(s_w)), np.int8)]
    ins += [*g.qparams(f"{name}_out", out), g.const(f"{name}_b", b, np.int32)]
    return g.node("QLinearConv", ins, name)


def _excite_and_gate(c: SeCase, g: Graph, pooled: str) -> tuple[str, Q]:
    h = _qconv(c, g, pooled, c.pool, "squeeze", c.w1, c.s_w1, c.b1, c.h)
    return _qconv(c, g, h, c.h, "excite", c.w2, c.s_w2, c.b2, c.z), c.z


def _gate_mul(c: SeCase, g: Graph, gate: str) -> str:
    ins = ["x", *g.qparams("xg", c.x), gate, *g.qparams("unit", Q(GATE_SCALE, 0))]
    return g.node("QLinearMul", [*ins, *g.qparams("y", c.y)], "y", domain=MS)


def _float_pool(c: SeCase, g: Graph, op: str) -> str:
    xf = g.node("DequantizeLinear", ["x", *g.qparams("x", c.x)], "xf")
    if op == "ReduceMean":
        pooled = g.node(op, [xf, g.const("axes", [2, 3], np.int64)], "mean", keepdims=1)
    else:
        pooled = g.node(op, [xf], "mean")
    return g.node("QuantizeLinear", [pooled, *g.qparams("pool", c.pool)], "pooled")


def _qlinear_pool(c: SeCase, g: Graph) -> str:
    ins = ["x", *g.qparams("x", c.x), *g.qparams("pool", c.pool)]
    return g.node("QLinearGlobalAveragePool", ins, "pooled", domain=MS, channels_last=0)


def _float_hsig(c: SeCase, g: Graph, z: str) -> str:
    zf = g.node("DequantizeLinear", [z, *g.qparams("z", c.z)], "zf")
    hs = g.node("HardSigmoid", [zf], "hs", alpha=1.0 / 6.0, beta=0.5)
    return g.node("QuantizeLinear", [hs, *g.qparams("gate", Q(GATE_SCALE, 0))], "gate")


def se_today(c: SeCase, g: Graph) -> str:
    """Today's export after ORT's fusions: float ReduceMean, float HardSigmoid."""
    z, _ = _excite_and_gate(c, g, _float_pool(c, g, "ReduceMean"))
    return _gate_mul(c, g, _float_hsig(c, g, z))


def se_gap_qdq(c: SeCase, g: Graph) -> str:
    """Today's, with the pooling exported as GlobalAveragePool: does ORT fuse its DQ/Q?"""
    z, _ = _excite_and_gate(c, g, _float_pool(c, g, "GlobalAveragePool"))
    return _gate_mul(c, g, _float_hsig(c, g, z))


def se_qlinear_add(c: SeCase, g: Graph) -> str:
    """QLinearGlobalAveragePool, convs, hard-sigmoid as QLinearAdd(z, 3) saturation, QLinearMul."""
    z, zq = _excite_and_gate(c, g, _qlinear_pool(c, g))
    three = [g.const("three", [255], np.uint8), *g.qparams("three", Q(3.0 / 255.0, 0))]
    ins = [z, *g.qparams("zq", zq), *three, *g.qparams("six", Q(SIX_SCALE, 0))]
    return _gate_mul(c, g, g.node("QLinearAdd", ins, "gate", domain=MS))


def se_qlinear_folded(c: SeCase, g: Graph) -> str:
    """QLinearGlobalAveragePool, and the + 3 folded into the excite conv's bias, its output at
    6/255 zero point 0: the hard-sigmoid costs nothing."""
    pooled = _qlinear_pool(c, g)
    h = _qconv(c, g, pooled, c.pool, "squeeze", c.w1, c.s_w1, c.b1, c.h)
    gate = _qconv(c, g, h, c.h, "excite", c.w2, c.s_w2, c.b2_plus3, Q(SIX_SCALE, 0))
    return _gate_mul(c, g, gate)


def _qdq_conv(c: SeCase, g: Graph, x: str, xq: Q, name: str, w, s_w, b, out: Q) -> str:
    """A 1x1 conv as Q/DQ: DQ input, DQ s8 per-channel weight, DQ int32 bias, Conv, Q."""
    xf = g.node("DequantizeLinear", [x, *g.qparams(f"{name}_in", xq)], f"{name}_xf")
    zw = g.const(f"{name}_wz", np.zeros(len(s_w)), np.int8)
    wf = [g.const(f"{name}_w", w, np.int8), g.const(f"{name}_ws", s_w), zw]
    wf = g.node("DequantizeLinear", wf, f"{name}_wf", axis=0)
    zb = g.const(f"{name}_bz", np.zeros(len(s_w)), np.int32)
    bs = g.const(f"{name}_bs", np.float32(xq.scale) * s_w)
    bf = g.node("DequantizeLinear", [g.const(f"{name}_b", b, np.int32), bs, zb], f"{name}_bf")
    conv = g.node("Conv", [xf, wf, bf], f"{name}_f")
    return g.node("QuantizeLinear", [conv, *g.qparams(f"{name}_out", out)], name)


def se_qdq_folded(c: SeCase, g: Graph) -> str:
    """The folded form written as Q/DQ only (GlobalAveragePool, Conv, Mul between DQ and Q; the
    gate's Q at 6/255 read back by a DQ at 1/255), for ORT's QDQ fusions to make integer."""
    pooled = _float_pool(c, g, "GlobalAveragePool")
    h = _qdq_conv(c, g, pooled, c.pool, "squeeze", c.w1, c.s_w1, c.b1, c.h)
    gate = _qdq_conv(c, g, h, c.h, "excite", c.w2, c.s_w2, c.b2_plus3, Q(SIX_SCALE, 0))
    unit = g.node("DequantizeLinear", [gate, *g.qparams("unit", Q(GATE_SCALE, 0))], "unit")
    xf = g.node("DequantizeLinear", ["x", *g.qparams("xg", c.x)], "xgf")
    y = g.node("Mul", [xf, unit], "yf")
    return g.node("QuantizeLinear", [y, *g.qparams("y", c.y)], "y")


SE_FORMS: dict[str, tuple[Callable, str | None]] = {
    "today_reducemean_hsig": (se_today, None),
    "gap_qdq_hsig": (se_gap_qdq, None),
    "qgap_qlinear_add": (se_qlinear_add, "staged_add"),
    "qgap_bias_folded": (se_qlinear_folded, "staged"),
    "qdq_bias_folded_fused": (se_qdq_folded, "staged"),
}


# ---------------------------------------------------------------- measuring

WRAP = "wrap_out"  # the consumer conv; it and "t"/"x" (the producer) are not the piece
WRAP_NODES = ("t", "x", WRAP)
# ORT's layout transformer puts the quantized convs in NHWC and leaves one Transpose at the
# graph's input and one at its output (as in the whole model, which has two): not the piece
EDGE_OP = "Transpose"


def session(
    model: onnx.ModelProto, threads: int, profile: str | None = None
) -> ort.InferenceSession:
    return ort_profile.benchmark_session(model.SerializeToString(), threads, profile)


def steps(got: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Max difference in output quantization steps, and the share of elements that differ."""
    diff = np.abs(got.astype(np.int32) - ref.astype(np.int32))
    return {"max": int(diff.max()), "share": float((diff > 0).mean())}


@dataclass
class Built:
    """One form at one shape: its model, input, and its exactness against the references."""

    model: onnx.ModelProto
    feed: dict[str, np.ndarray]
    exact: dict[str, dict[str, float]]


ELEMENTWISE = {"hswish": (HswishCase, HSWISH_FORMS), "sigmoid": (SigmoidCase, SIGMOID_FORMS)}


def build_hswish(form: str, channels: int, side: int, seed: int = 0, wrap: bool = True) -> Built:
    """Hard-swish ``form`` on [1, channels, side, side]; with ``wrap``, between two identity
    QLinearConvs, so that ORT lays the piece out as in the model (NHWC, its layout for
    quantized convs) instead of leaving it NCHW between transposes."""
    return build_elementwise("hswish", form, channels, side, seed, wrap)


def build_sigmoid(form: str, channels: int, side: int, seed: int = 0, wrap: bool = True) -> Built:
    """A sigmoid gate ``form``, as build_hswish."""
    return build_elementwise("sigmoid", form, channels, side, seed, wrap)


def build_elementwise(kind: str, form: str, channels: int, side: int, seed: int, wrap: bool):
    case_type, forms = ELEMENTWISE[kind]
    case = case_type()
    builder, staged = forms[form]
    g = Graph()
    shape = [1, channels, side, side] if side > 1 else [1, channels]
    if wrap and side > 1:
        g.identity_conv("t_in", case.t, channels, "t")
        model = g.model({"t_in": shape}, g.identity_conv(builder(case, g), case.y, channels, WRAP))
    else:
        model = g.model({"t": shape}, builder(case, g))
    t = np.random.default_rng(seed).integers(0, 256, shape).astype(np.uint8)
    t.flat[:256] = np.arange(256) if t.size >= 256 else t.flat[:256]  # every code, where it fits
    feed = {model.graph.input[0].name: t}
    got = session(model, 1).run(None, feed)[0]
    exact = {"today": steps(got, case.today_ref(t))}
    if staged:
        exact[staged] = steps(got, case.staged_ref(t))
    return Built(model, feed, exact)


def build_se(
    form: str, channels: int, squeeze: int, side: int, seed: int = 0, wrap: bool = True
) -> Built:
    """SE ``form`` on [1, channels, side, side]; ``wrap`` as for build_hswish."""
    case = SeCase(channels, squeeze, seed=seed)
    builder, staged = SE_FORMS[form]
    g = Graph()
    shape = [1, channels, side, side]
    if wrap:
        g.identity_conv("x_in", case.x, channels, "x")
        model = g.model({"x_in": shape}, g.identity_conv(builder(case, g), case.y, channels, WRAP))
    else:
        model = g.model({"x": shape}, builder(case, g))
    x = np.random.default_rng(seed + 1).integers(0, 256, shape).astype(np.uint8)
    feed = {model.graph.input[0].name: x}
    got = session(model, 1).run(None, feed)[0]
    exact = {"today": steps(got, case.today_ref(x))}
    if staged:
        exact[staged] = steps(got, getattr(case, f"{staged}_ref")(x))
    return Built(model, feed, exact)


def kernel_profile(built: Built, threads: int, runs: int, tmp: Path) -> dict[str, dict]:
    """Per op type: kernel ms per run (ORT's profiler) and the element types it ran on."""
    sess = session(built.model, threads, str(tmp / "prof"))
    for _ in range(5):
        sess.run(None, built.feed)
    for _ in range(runs):
        sess.run(None, built.feed)
    path = Path(sess.end_profiling())
    events = json.loads(path.read_text())
    path.unlink()
    starts = sorted(e["ts"] for e in events if e.get("name") == "model_run")
    start = starts[-runs]  # the timed runs, not the warm-up ones
    # per node, the median over runs: on a shared machine one preempted run would else
    # dominate a mean of microsecond kernels
    per_node: dict[str, list[float]] = defaultdict(list)
    node_op: dict[str, str] = {}
    types: dict[str, set] = defaultdict(set)
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time") or e["ts"] < start:
            continue
        if re.sub(r"_token_\d+$", "", e["name"].removesuffix("_kernel_time")) in WRAP_NODES:
            continue
        op = node_op.setdefault(e["name"], e["args"]["op_name"])
        per_node[e["name"]].append(e["dur"] / 1e3)
        for io in ("input_type_shape", "output_type_shape"):
            for t in e["args"].get(io, []):
                types[op].update(t)
    by_op: dict[str, float] = defaultdict(float)
    for name, durs in per_node.items():
        by_op[node_op[name]] += statistics.median(durs)
    return {op: {"ms": ms, "types": sorted(types[op])} for op, ms in by_op.items()}


def wall_times(builts: dict[str, Built], threads: int, rounds: int) -> dict[str, float]:
    """Median ms per run of each form, round-robin so noise hits them alike."""
    sessions = {name: session(b.model, threads) for name, b in builts.items()}
    times: dict[str, list[float]] = {name: [] for name in builts}
    for round_ in range(rounds + 20):
        for name, sess in sessions.items():
            start = time.perf_counter()
            sess.run(None, builts[name].feed)
            if round_ >= 20:
                times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def probe(kind: str, shapes: dict, args, tmp: Path) -> list[dict]:
    forms = {"hswish": HSWISH_FORMS, "sigmoid": SIGMOID_FORMS, "se": SE_FORMS}[kind]
    build = {"hswish": build_hswish, "sigmoid": build_sigmoid, "se": build_se}[kind]
    rows = []
    for shape, count in shapes.items():
        builts = {form: build(form, *shape) for form in forms}
        wall = wall_times(builts, args.threads, args.rounds)
        today = next(iter(forms))
        kernels = {
            f: kernel_profile(b, args.threads, args.profile_runs, tmp) for f, b in builts.items()
        }
        for form, built in builts.items():
            rows.append({
                "kind": kind, "shape": list(shape), "count": count, "form": form,
                "kernel_ms": kernels[form], "kernel_total_ms": piece_ms(kernels[form]),
                "kernel_speedup": piece_ms(kernels[today]) / piece_ms(kernels[form]),
                "wall_ms": wall[form], "speedup": wall[today] / wall[form],
                "exact": built.exact,
            })  # fmt: skip
    return rows


def piece_ms(kernels: dict[str, dict]) -> float:
    """Kernel ms of the piece itself: every op type but the edge transposes."""
    return sum(v["ms"] for op, v in kernels.items() if op != EDGE_OP)


def model_totals(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Each form's wall and kernel ms summed over mobilenet-v3-large-se's instances."""
    totals: dict[str, dict[str, float]] = defaultdict(lambda: {"wall_ms": 0.0, "kernel_ms": 0.0})
    for r in rows:
        if not r["count"]:
            continue
        key = f"{r['kind']}:{r['form']}"
        totals[key]["wall_ms"] += r["wall_ms"] * r["count"]
        totals[key]["kernel_ms"] += r["kernel_total_ms"] * r["count"]
    return dict(totals)


def contrib_ops() -> dict[str, list[str]]:
    """The quantized elementwise/pooling ops this ORT build has CPU kernels for, with the
    element types each kernel is registered for (none listed: the kernel takes any)."""
    kernels = ort.capi.onnxruntime_pybind11_state.get_all_opkernel_def()
    wanted = ("QLinear", "QGemm", "Lookup")
    found: dict[str, set] = defaultdict(set)
    for k in kernels:
        if k.provider == "CPUExecutionProvider" and any(w in k.op_name for w in wanted):
            found[f"{k.domain or 'ai.onnx'}::{k.op_name}"].update(
                t for ts in dict(k.type_constraints).values() for t in ts
            )
    schemas = ort.capi.onnxruntime_pybind11_state.get_all_operator_schema()
    for s in schemas:
        name = f"{s.domain or 'ai.onnx'}::{s.name}"
        if any(w in s.name for w in wanted) and name not in found and s.domain == MS:
            found[name] = {"NO CPU KERNEL (schema only)"}
    return {k: sorted(v) for k, v in sorted(found.items())}


def print_table(rows: list[dict], totals: dict) -> None:
    print("wall: the piece between two identity QLinearConvs and edge transposes (in both")
    print("today's form and the form); piece: its own kernels' ms (ORT profiler, median per node)")
    head = f"{'form':22} {'shape':>11} {'wall ms':>7} {'x today':>7} {'piece ms':>8} {'x today':>7}"
    print(f"{head} {'exact (steps)':>30}  kernels by op type (ms)")
    for r in rows:
        exact = " ".join(f"{k}:{v['max']}({v['share']:.1%})" for k, v in r["exact"].items())
        kern = " ".join(f"{op}={v['ms']:.3f}" for op, v in sorted(r["kernel_ms"].items()))
        shape = "x".join(map(str, r["shape"]))
        wall = f"{r['wall_ms']:7.4f} {r['speedup']:7.2f}"
        piece = f"{r['kernel_total_ms']:8.4f} {r['kernel_speedup']:7.2f}"
        print(f"{r['form']:22} {shape:>11} {wall} {piece} {exact:>30}  {kern}")
    print("\nsummed over mobilenet-v3-large-se at 224 (instances x per-instance time):")
    for key, v in totals.items():
        print(f"  {key:34} wall {v['wall_ms']:7.3f} ms   kernels {v['kernel_ms']:7.3f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--profile-runs", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="one shape of each kind")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    hs = dict(list(HSWISH_SHAPES.items())[:1]) if args.quick else HSWISH_SHAPES
    se = dict(list(SE_SHAPES.items())[:1]) if args.quick else SE_SHAPES
    ops = contrib_ops()
    print(f"onnxruntime {ort.__version__}, {args.threads} threads, cpu count {os.cpu_count()}")
    print("quantized CPU kernels in this build:")
    for name, types in ops.items():
        print(f"  {name}: {', '.join(types) or 'any type'}")
    with tempfile.TemporaryDirectory() as tmp:
        rows = probe("hswish", hs, args, Path(tmp)) + probe("se", se, args, Path(tmp))
        rows += probe("sigmoid", SIGMOID_SHAPES, args, Path(tmp))
    totals = model_totals(rows)
    print_table(rows, totals)
    if args.json_out:
        report = {"ort": ort.__version__, "threads": args.threads, "contrib_ops": ops}
        report |= {"rows": rows, "model_totals": totals}
        args.json_out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
