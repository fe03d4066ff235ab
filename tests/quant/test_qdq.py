"""The Q/DQ twin: matches the calibrated fake-quant model, exports to ONNX, runs in ORT."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import numpy_helper
from torch import nn

from edgegate.exporters.onnx import custom_ops_used
from edgegate.exporters.onnx.export import export_onnx
from edgegate.quant.calibrate import calibrate
from edgegate.quant.graph import QuantConfig, quantize_model
from edgegate.quant.profiles import get_profile
from edgegate.quant.qdq import QDQLayer, QuantDequant, activation_quants, to_qdq
from tests.quant.tiny_models import PROFILES, mixer_net, tiny_cnn

STEPS = 3  # allowed disagreement, in output quantization steps


def images(n: int, seed: int, size: int = 16) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def output_step(twin: nn.Module, reference: torch.Tensor) -> float:
    """One output quantization step: the head's output quantizer (placed after it), else the
    int8 grid of |y|."""
    quantizer = dict(twin.named_modules()).get("head_output_quant")
    if isinstance(quantizer, QuantDequant):
        return quantizer.quant.scale
    return float(reference.abs().max()) / 127


def top1(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    return float((np.asarray(a).argmax(-1) == np.asarray(b).argmax(-1)).mean())


@pytest.fixture(scope="module")
def cnn_pairs() -> dict[str, tuple[nn.Module, nn.Module]]:
    """Per profile: (calibrated fake-quant model, its Q/DQ twin)."""
    pairs = {}
    for profile in PROFILES:
        qmodel = quantize_model(tiny_cnn(), QuantConfig(get_profile(profile), "minmax"))
        calibrate(qmodel, [(images(16, seed),) for seed in range(1, 5)])
        pairs[profile] = (qmodel, to_qdq(qmodel))
    return pairs


@pytest.fixture(scope="module")
def test_images() -> torch.Tensor:
    return images(200, seed=99)


# --- twin vs fake quant -----------------------------------------------------------------------


@pytest.mark.parametrize("profile", PROFILES)
def test_twin_matches_fake_quant(cnn_pairs, test_images, profile):
    qmodel, twin = cnn_pairs[profile]
    assert not any(type(m).__module__.startswith("brevitas.nn") for m in twin.modules()), (
        "the twin still holds brevitas layers"
    )
    stems = int(get_profile(profile).float_image_stem)  # float under onnxruntime
    assert sum(isinstance(m, QDQLayer) for m in twin.modules()) == 5 - stems
    with torch.no_grad():
        fake, ours = qmodel(test_images), twin(test_images)
    step = output_step(twin, fake)
    assert (fake - ours).abs().max().item() <= STEPS * step + 1e-6
    assert top1(fake, ours) >= 0.995


@pytest.mark.parametrize("profile", PROFILES)
def test_twin_activation_quants_follow_the_profile(cnn_pairs, profile):
    _, twin = cnn_pairs[profile]
    quants = activation_quants(twin)
    assert quants
    for name, quant in quants.items():
        assert quant.signed is (profile == "tensorrt"), name
        if profile == "tensorrt":
            assert quant.zero_point == 0, name
    assert quants["se_gate_gate_quant"].scale == pytest.approx(
        1 / 127 if profile == "tensorrt" else 1 / 255, rel=1e-6
    )


@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    batch=st.integers(1, 4),
    height=st.integers(2, 8).map(lambda v: 2 * v + 1),
    width=st.integers(2, 8).map(lambda v: 2 * v + 1),
    profile=st.sampled_from(PROFILES),
    seed=st.integers(0, 2**16),
)
def test_twin_matches_fake_quant_on_any_shape(cnn_pairs, batch, height, width, profile, seed):
    qmodel, twin = cnn_pairs[profile]
    x = torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        fake, ours = qmodel(x), twin(x)
    assert ours.shape == fake.shape == (batch, 10)
    step = output_step(twin, fake)
    assert (fake - ours).abs().max().item() <= STEPS * step + 1e-6


# --- ONNX -------------------------------------------------------------------------------------


def _session(path, profile: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.log_severity_level = 3
    if profile == "tensorrt":
        # as the onnx target does: a TensorRT graph is checked as written, not ORT-fused
        options.add_session_config_entry("session.disable_quant_qdq", "1")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def cnn_onnx(cnn_pairs, tmp_path_factory) -> dict[str, onnx.ModelProto]:
    out = {}
    for profile, (_, twin) in cnn_pairs.items():
        path = tmp_path_factory.mktemp(profile) / "model.onnx"
        out[profile] = export_onnx(twin, (images(1, seed=7),), path)
    return out


def _initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


@pytest.mark.parametrize("profile", PROFILES)
def test_onnxruntime_reproduces_the_fake_quant_model(cnn_pairs, cnn_onnx, test_images, profile):
    qmodel, _ = cnn_pairs[profile]
    model = onnx.load(cnn_onnx[profile])
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    session = _session(cnn_onnx[profile], profile)
    (got,) = session.run(None, {session.get_inputs()[0].name: test_images.numpy()})
    with torch.no_grad():
        fake = qmodel(test_images).numpy()
    assert got.shape == fake.shape
    assert top1(fake, got) >= 0.995


def test_tensorrt_activation_zero_points_are_zero(cnn_onnx):
    model = onnx.load(cnn_onnx["tensorrt"])
    inits = _initializers(model)
    quantize = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert len(quantize) >= 5
    for node in quantize:
        assert len(node.input) == 3, node.name
        zero_point = inits[node.input[2]]
        assert zero_point.dtype == np.int8, node.name
        assert np.all(zero_point == 0), node.name
    # float bias: no int32 initializer anywhere
    assert not [k for k, v in inits.items() if v.dtype == np.int32]


def test_onnxruntime_weights_are_int8_per_channel_and_biases_int32(cnn_onnx):
    model = onnx.load(cnn_onnx["onnxruntime"])
    inits = _initializers(model)
    weights = biases = 0
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in inits:
            continue
        data, scale = inits[node.input[0]], inits[node.input[1]]
        if data.dtype == np.int8:
            weights += 1
            assert data.ndim in (2, 4), node.input[0]
            assert scale.shape == (data.shape[0],), node.input[0]
            assert _attr(node, "axis", 1) == 0, node.input[0]
            assert np.all(inits[node.input[2]] == 0), node.input[0]
        elif data.dtype == np.int32:
            biases += 1
            assert data.ndim == 1 and scale.shape == data.shape, node.input[0]
            assert _attr(node, "axis", 1) == 0, node.input[0]
    assert weights == 4 and biases == 4  # the image stem stays float
    # activation zero points are u8 (asymmetric) under onnxruntime
    quantize = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert quantize and all(inits[n.input[2]].dtype == np.uint8 for n in quantize)


# --- gated scan -------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", PROFILES)
def test_gated_scan_model_exports_with_its_custom_op(tmp_path, profile):
    torch.manual_seed(0)
    model = mixer_net("gla")
    qmodel = quantize_model(model, QuantConfig(get_profile(profile), "minmax"))
    gen = torch.Generator().manual_seed(1)
    calibrate(qmodel, [(torch.randn(4, 6, 8, generator=gen),) for _ in range(3)])
    twin = to_qdq(qmodel)
    assert any(isinstance(m, QuantDequant) for m in twin.modules())
    x = torch.randn(4, 6, 8, generator=gen)
    path = export_onnx(twin, (x[:1],), tmp_path / "gla.onnx")
    assert custom_ops_used(path) == ["edgegate.GatedLinearAttention"]
    onnx_model = onnx.load(path)
    assert ("edgegate", "GatedLinearAttention") in {
        (f.domain, f.name) for f in onnx_model.functions
    }
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in onnx_model.graph.node}
    session = _session(path, profile)
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        ours = twin(x).numpy()
    assert got.shape == ours.shape
    np.testing.assert_allclose(got, ours, atol=1e-3 * max(1.0, float(np.abs(ours).max())))


def test_onnxruntime_keeps_the_se_pooling_in_integers(cnn_onnx, tmp_path):
    """The SE block's pooling is exported as GlobalAveragePool, which ORT fuses with its Q/DQ
    into QLinearGlobalAveragePool (a ReduceMean would run in float between a DQ and a Q)."""
    model = onnx.load(cnn_onnx["onnxruntime"])
    assert "ReduceMean" not in {n.op_type for n in model.graph.node}
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(cnn_onnx["onnxruntime"]), options, providers=["CPUExecutionProvider"])
    fused = {n.op_type for n in onnx.load(tmp_path / "optimized.onnx").graph.node}
    assert "QLinearGlobalAveragePool" in fused, sorted(fused)
