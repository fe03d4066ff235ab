"""Attention blocks in ONNX Runtime's integer kernels (quant.integer_attention): what the
fake-quant model computes, and that ORT runs the exported graph with integer kernels."""

from __future__ import annotations

import operator

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from brevitas.graph.calibrate import calibration_mode
from brevitas.nn import QuantIdentity
from torch import nn

from edgegate.exporters.onnx.export import export_onnx
from edgegate.models.blocks import Attention
from edgegate.models.blocks.attention import ClippedSoftmax
from edgegate.ops import clipped_softmax
from edgegate.quant.calibrate import calibrate
from edgegate.quant.gates import UnitRangeUint8
from edgegate.quant.graph import QuantConfig, quantize_model
from edgegate.quant.integer_attention import IntegerClippedSoftmax, OnGrid, grid_of
from edgegate.quant.profiles import get_profile
from edgegate.quant.qdq import to_qdq
from tests.quant.tiny_models import attention_net, tiny_cnn

VARIANTS = ("softmax", "clipped", "gated")
# ops that would mean a tensor left the integer domain between the input Q and the output DQ
FLOAT_OPS = {"MatMul", "Gemm", "Mul", "Add", "Clip", "Sigmoid", "QLinearSoftmax"}
INTEGER_OPS = {
    "softmax": {"QGemm", "QLinearMatMul"},
    "clipped": {"QGemm", "QLinearMatMul", "QLinearAdd"},
    "gated": {"QGemm", "QLinearMatMul", "QLinearMul", "QLinearSigmoid"},
}


def tokens(n: int = 3, seed: int = 1, batch: int = 4) -> list[tuple[torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, 6, 8, generator=gen),) for _ in range(n)]


def quantized(model: nn.Module, profile: str = "onnxruntime") -> nn.Module:
    qmodel = quantize_model(model, QuantConfig(get_profile(profile), "minmax"))
    calibrate(qmodel, tokens())
    return qmodel


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    return {variant: quantized(attention_net(variant)) for variant in VARIANTS}


def call_modules(qmodel: nn.Module, kind: type) -> list[tuple[torch.fx.Node, nn.Module]]:
    modules = dict(qmodel.named_modules())
    return [
        (n, modules[n.target])
        for n in qmodel.graph.nodes
        if n.op == "call_module" and isinstance(modules[n.target], kind)
    ]


@pytest.mark.parametrize("variant", VARIANTS)
def test_values_on_a_grid_are_not_requantized(models, variant):
    """q, k and v are the qkv linear's quantized output, reached through layout ops: their
    matmul inputs read that grid (``q * scale`` at scale times the factor), no second one."""
    qmodel = models[variant]
    modules = dict(qmodel.named_modules())
    for node, _ in call_modules(qmodel, QuantIdentity):
        assert grid_of(node.args[0], modules) is None, f"{node.target} requantizes a grid"
    views = [m for _, m in call_modules(qmodel, OnGrid)]
    qkv_grid = qmodel.attn_qkv_output_quant.act_quant
    scaled = [m for m in views if m.factor != 1.0]
    assert len(scaled) == 1 and scaled[0].factor == pytest.approx(8**-0.5)  # q * d_head^-0.5
    assert sum(m.grid is qkv_grid for m in views) == 3  # q, k and v
    # the float ``* scale`` is gone: the scaled view reads it off the codes
    assert not [n for n in qmodel.graph.nodes if n.target is operator.mul and 8**-0.5 in n.args]


def test_clipped_softmax_becomes_its_integer_form(models):
    qmodel = models["clipped"]
    assert isinstance(qmodel.attn.softmax, IntegerClippedSoftmax)
    assert not any(type(m) is ClippedSoftmax for m in qmodel.modules())


def test_gate_product_has_both_factors_quantized(models):
    """The gated-attention output gate: ``(softmax @ v) * gate``, the matmul's output on a
    calibrated grid and the gate on its own fixed one (through the unsqueeze)."""
    qmodel = models["gated"]
    modules = dict(qmodel.named_modules())
    (product,) = [n for n in qmodel.graph.nodes if n.target is operator.mul]
    kinds = sorted(type(modules[a.target]).__name__ for a in product.args)
    assert kinds == ["OnGrid", "QuantIdentity"], kinds
    (view,) = [modules[a.target] for a in product.args if isinstance(modules[a.target], OnGrid)]
    assert view.grid is qmodel.attn_head_gate_gate_gate_quant.act_quant


def test_integer_clipped_softmax_keeps_exact_zeros_and_ones():
    gamma = -2 / 17
    form = nn.Sequential(
        IntegerClippedSoftmax(ClippedSoftmax(gamma)),
        QuantIdentity(act_quant=UnitRangeUint8, return_quant_tensor=False),
    ).eval()
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(64, 17, generator=gen) * 3
    x[0] = -30.0
    x[0, 4] = 30.0  # all attention on one token: exactly 1 there, exactly 0 elsewhere
    with torch.no_grad():
        out = form(x)
        with calibration_mode(form):  # quantizers off: a clipped softmax, clip included
            off = form(x)
    reference = clipped_softmax(x, gamma)
    assert out[0, 4].item() == 1.0 and (out[0, torch.arange(17) != 4] == 0.0).all()
    codes = out * 255
    torch.testing.assert_close(codes, codes.round(), atol=1e-4, rtol=0)
    # one rounding of p (stretched by zeta - gamma) and one of the result
    assert (out - reference).abs().max() <= (1 - gamma) * 0.5 / 255 + 0.5 / 255 + 1e-6
    assert ((reference == 0) == (out == 0)).float().mean() > 0.99
    torch.testing.assert_close(off, reference)


def test_graphs_without_attention_and_other_profiles_are_left_alone():
    cnn = quantize_model(tiny_cnn(), QuantConfig(get_profile("onnxruntime"), "minmax"))
    assert not call_modules(cnn, OnGrid)
    for variant in VARIANTS:
        trt = quantize_model(attention_net(variant), QuantConfig(get_profile("tensorrt"), "minmax"))
        assert not call_modules(trt, OnGrid) and not call_modules(trt, IntegerClippedSoftmax)


class CausalNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(8, 16)
        self.attn = Attention(16, heads=2, causal=True)
        self.out = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.attn(self.inp(x)))


def ort_ops(path, tmp_path) -> tuple[ort.InferenceSession, list[str]]:
    """The session, and the op types of ORT's optimized graph that compute on tensors (shape
    arithmetic left out: the Mul of batch and sequence length a dynamic reshape needs)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    graph = onnx.load(tmp_path / "optimized.onnx").graph
    constant = {t.name for t in graph.initializer}
    shapes: set[str] = set()
    ops = []
    for node in graph.node:  # topologically sorted
        inputs = [i for i in node.input if i and i not in constant]
        if node.op_type == "Shape" or (inputs and all(i in shapes for i in inputs)):
            shapes.update(node.output)
        else:
            ops.append(node.op_type)
    return session, ops


@pytest.mark.parametrize(
    ("variant", "profile"),
    [*((v, "onnxruntime") for v in VARIANTS), ("gated", "onnxruntime:x86-avx2")],
)
def test_onnxruntime_runs_attention_in_integers(models, variant, profile, tmp_path):
    """After ORT's QDQ fusions the linears are QGemm, softmax @ v a QLinearMatMul, the clipped
    softmax's stretch a QLinearAdd, the gate product a QLinearMul; the only float between the
    input's Q and the output's DQ is the scores (MatMulIntegerToFloat, Softmax, then the Q of
    the softmax output). ORT's output equals the fake-quant model's up to one output step, on
    the host's profile and on AVX2's (7-bit weights)."""
    if profile == "onnxruntime":
        qmodel = models[variant]
    else:
        qmodel = quantized(attention_net(variant), profile)
    twin = to_qdq(qmodel)
    x = tokens(1, seed=7, batch=32)[0][0]
    path = export_onnx(twin, (x[:1],), tmp_path / "attention.onnx")
    session, ops = ort_ops(path, tmp_path)
    assert INTEGER_OPS[variant] <= set(ops), sorted(set(ops))
    assert not FLOAT_OPS & set(ops), sorted(set(ops))
    assert ops.count("QLinearMatMul") == 1 and ops.count("QGemm") == 4, ops
    assert ops.count("MatMulIntegerToFloat") == 1 and ops.count("Softmax") == 1, ops
    assert ops.count("QuantizeLinear") == 2 and ops.count("DequantizeLinear") == 1, ops
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        fake = qmodel(x).numpy()
    step = float(qmodel.out_output_quant.act_quant.scale())
    assert np.abs(got - fake).max() <= step + 1e-6
    assert (got.argmax(-1) == fake.argmax(-1)).mean() >= 0.99


def test_causal_attention_masks_float_scores(tmp_path):
    """The causal mask (a Where on the float scores, -inf above the diagonal) stays where it
    is; the rest of the block runs in integers as without it."""
    torch.manual_seed(0)
    qmodel = quantized(CausalNet().eval())
    x = tokens(1, seed=7, batch=8)[0][0]
    path = export_onnx(to_qdq(qmodel), (x[:1],), tmp_path / "causal.onnx")
    session, ops = ort_ops(path, tmp_path)
    assert {"MatMulIntegerToFloat", "Where", "Softmax", "QLinearMatMul", "QGemm"} <= set(ops), ops
    assert not FLOAT_OPS & set(ops), sorted(set(ops))
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        fake = qmodel(x).numpy()
    assert np.abs(got - fake).max() <= float(qmodel.out_output_quant.act_quant.scale()) + 1e-6
