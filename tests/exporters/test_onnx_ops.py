"""Each gated-scan op in a tiny module: ONNX fallback and ORT lowering vs PyTorch eager."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from edgegate.exporters.onnx import custom_ops_used, export_onnx
from edgegate.ops import gated_delta_rule, gated_linear_attention, gated_linear_scan

H, K, V = 2, 4, 3


class Scan(nn.Module):
    def forward(self, x, g, h0):
        return gated_linear_scan(x, g, h0)


class GLA(nn.Module):
    def forward(self, q, k, v, g, h0):
        return gated_linear_attention(q, k, v, g, h0)


class GLANoState(nn.Module):
    def forward(self, q, k, v, g):
        return gated_linear_attention(q, k, v, g)


class Delta(nn.Module):
    def forward(self, q, k, v, g, beta, h0):
        return gated_delta_rule(q, k, v, g, beta, h0)


def _inputs(case: str, B: int, T: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=gen)

    def gate(*shape):
        return torch.nn.functional.logsigmoid(r(*shape)) / 4

    if case == "scan":
        return r(B, T, H, K), gate(B, T, H, K), r(B, H, K)
    q, k, v = r(B, T, H, K), torch.nn.functional.normalize(r(B, T, H, K), dim=-1), r(B, T, H, V)
    if case == "gla_vector":
        return q, k, v, gate(B, T, H, K), r(B, H, K, V)
    if case == "gla_scalar":
        return q, k, v, gate(B, T, H), r(B, H, K, V)
    if case == "gla_no_state":
        return q, k, v, gate(B, T, H, K)
    return q, k, v, gate(B, T, H), torch.rand(B, T, H, generator=gen), r(B, H, K, V)


MODULES = {
    "scan": (Scan, "GatedLinearScan"),
    "gla_vector": (GLA, "GatedLinearAttention"),
    "gla_scalar": (GLA, "GatedLinearAttention"),
    "gla_no_state": (GLANoState, "GatedLinearAttention"),
    "delta": (Delta, "GatedDeltaRule"),
}


@pytest.fixture(scope="module", params=sorted(MODULES))
def exported(request, tmp_path_factory):
    case = request.param
    module_cls, op_type = MODULES[case]
    module = module_cls()
    args = _inputs(case, B=1, T=6)
    names = [f"in{i}" for i in range(len(args))]
    folder = tmp_path_factory.mktemp(case)
    dyn = tuple(
        {0: torch.export.Dim.AUTO} | ({1: torch.export.Dim.AUTO} if a.shape[1] == 6 else {})
        for a in args
    )
    paths = {
        form: export_onnx(
            module,
            args,
            folder / f"{form}.onnx",
            lower=lower,
            input_names=names,
            output_names=["out", "state"],
            dynamic_shapes=dyn,
        )  # fmt: skip
        for form, lower in (("fallback", None), ("lowered", "onnxruntime"))
    }
    return case, module, op_type, names, paths


def _run(path, names, args):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {n: a.numpy() for n, a in zip(names, args, strict=True)})


@pytest.mark.parametrize("B,T", [(3, 11), (2, 1), (1, 70)])
@pytest.mark.parametrize("form", ["fallback", "lowered"])
def test_onnx_matches_eager_at_other_shapes(exported, form, B, T):
    case, module, _, names, paths = exported
    args = _inputs(case, B=B, T=T, seed=B * 100 + T)
    with torch.no_grad():
        ref_out, ref_state = (t.numpy() for t in module(*args))
    out, state = _run(paths[form], names, args)
    scale = max(1.0, float(np.abs(ref_out).max()))
    assert np.abs(out - ref_out).max() <= 1e-4 * scale
    assert np.abs(state - ref_state).max() <= 1e-4 * max(1.0, float(np.abs(ref_state).max()))


def test_fallback_keeps_one_custom_node_and_its_function(exported):
    _, _, op_type, _, paths = exported
    model = onnx.load(paths["fallback"])
    nodes = [n for n in model.graph.node if n.domain == "edgegate"]
    assert [n.op_type for n in nodes] == [op_type]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in nodes[0].attribute}
    assert attrs["plugin_namespace"] == b"edgegate" and attrs["plugin_version"] == b"1"
    assert [(f.domain, f.name) for f in model.functions] == [("edgegate", op_type)]
    onnx.checker.check_model(model, full_check=True)


def test_lowered_uses_the_native_kernel(exported):
    _, _, _, _, paths = exported
    model = onnx.load(paths["lowered"])
    assert custom_ops_used(model) == ["com.microsoft.LinearAttention"]
    assert not [n for n in model.graph.node if n.domain == "edgegate"]
    assert not list(model.functions)
    onnx.checker.check_model(model, full_check=True)


STATEFUL = [case for case in sorted(MODULES) if case != "gla_no_state"]


@pytest.mark.parametrize("exported", STATEFUL, indirect=True)
def test_streaming_halves_equal_one_pass(exported):
    """The state as an explicit input/output: two calls on halves == one call on the whole."""
    case, _, _, names, paths = exported
    whole = _inputs(case, B=2, T=14, seed=7)
    split = 5
    time_major = [a.dim() >= 3 and a.shape[1] == 14 for a in whole]
    first = [a[:, :split] if tm else a for a, tm in zip(whole, time_major, strict=True)]
    for form in ("fallback", "lowered"):
        full_out, full_state = _run(paths[form], names, whole)
        out1, state1 = _run(paths[form], names, first)
        second = [a[:, split:] if tm else a for a, tm in zip(whole, time_major, strict=True)]
        second[-1] = torch.from_numpy(state1)  # carry the state
        out2, state2 = _run(paths[form], names, second)
        np.testing.assert_allclose(np.concatenate([out1, out2], 1), full_out, atol=1e-5)
        np.testing.assert_allclose(state2, full_state, atol=1e-5)


def test_unknown_lowering_is_bad_input(tmp_path):
    from edgegate.errors import BadInput

    with pytest.raises(BadInput, match="tflite"):
        export_onnx(Scan(), _inputs("scan", 1, 4), tmp_path / "x.onnx", lower="tflite")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("case", sorted(MODULES))
def test_lowering_takes_heads_and_dims_from_the_example(case, tmp_path):
    """A module that calls a scan on its own inputs, exported with every dim dynamic (the
    default): H and D come from the example, B and T stay dynamic."""
    module_cls, _ = MODULES[case]
    module = module_cls()
    args = _inputs(case, B=1, T=6)
    names = [f"in{i}" for i in range(len(args))]
    path = export_onnx(
        module, args, tmp_path / "m.onnx", lower="onnxruntime", input_names=names,
        output_names=["out", "state"],
    )  # fmt: skip
    assert custom_ops_used(path) == ["com.microsoft.LinearAttention"]
    other = _inputs(case, B=3, T=11, seed=5)
    with torch.no_grad():
        ref_out, ref_state = (t.numpy() for t in module(*other))
    out, state = _run(path, names, other)
    assert np.abs(out - ref_out).max() <= 1e-4 * max(1.0, float(np.abs(ref_out).max()))
    assert np.abs(state - ref_state).max() <= 1e-4 * max(1.0, float(np.abs(ref_state).max()))


def test_log_sigmoid_stays_finite_where_onnxruntimes_sigmoid_flushes_to_zero(tmp_path):
    """Log-space gates of trained models reach x < -20, where Log(Sigmoid(x)) in ONNX Runtime
    is -inf; edgegate exports the stable min(x, 0) - log(1 + exp(-|x|))."""

    class LogSigmoid(nn.Module):
        def forward(self, x):
            return torch.nn.functional.logsigmoid(x)

    x = torch.linspace(-120.0, 40.0, 161).reshape(1, 161)
    path = export_onnx(LogSigmoid(), (x,), tmp_path / "ls.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    ref = torch.nn.functional.logsigmoid(x).numpy()
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
