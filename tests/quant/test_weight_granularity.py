"""`--weight-granularity tensor`: one weight scale per tensor, in the fake-quant model, its Q/DQ
twin, the ONNX file ONNX Runtime runs, and the saved state `validate` rebuilds."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from edgegate.exporters.onnx.export import export_onnx
from edgegate.quant.calibrate import calibrate
from edgegate.quant.graph import QuantConfig, quantize_model
from edgegate.quant.profiles import get_profile, weight_granularity
from edgegate.quant.qdq import QDQLayer, to_qdq
from edgegate.quant.quantizers import weight_quantizer
from edgegate.quant.state import load_fake_quant, save_state
from tests.quant.tiny_models import tiny_cnn

PROFILES = ("onnxruntime:x86-avx2", "onnxruntime:x86-vnni", "tensorrt")


def images(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", [*PROFILES, "coreml"])
def test_tensor_granularity_replaces_only_the_weight_scales(name):
    profile, tensor = get_profile(name), get_profile(name, granularity="tensor")
    assert profile.weight_per_channel and not tensor.weight_per_channel
    assert tensor.name == profile.name and tensor.weight_bits == profile.weight_bits
    assert weight_granularity(tensor) == "tensor" and weight_granularity(profile) == "channel"
    assert get_profile(name, granularity="channel") == profile


@pytest.mark.parametrize("method", ["minmax", "mse"])
@pytest.mark.parametrize("name", PROFILES)
def test_per_tensor_quantizer_keeps_the_profiles_bit_width(name, method):
    profile = get_profile(name, granularity="tensor")
    quantizer = weight_quantizer(profile, method)
    assert "PerTensor" in quantizer.__name__
    assert quantizer.bit_width == profile.weight_bits


@pytest.fixture(scope="module", params=PROFILES)
def per_tensor(request):
    """A calibrated per-tensor fake-quant tiny CNN under each profile, and its Q/DQ twin."""
    config = QuantConfig(get_profile(request.param, granularity="tensor"))
    qmodel = quantize_model(tiny_cnn(), config)
    calibrate(qmodel, [(images(16, seed),) for seed in range(1, 4)])
    return request.param, qmodel, to_qdq(qmodel)


def test_twin_holds_one_weight_scale_per_tensor_and_matches_fake_quant(per_tensor):
    _, qmodel, twin = per_tensor
    layers = [m for m in twin.modules() if isinstance(m, QDQLayer)]
    assert layers and all(layer.tensor_scales is not None for layer in layers)
    x = images(64, seed=9)
    with torch.no_grad():
        fake, ours = qmodel(x), twin(x)
    assert torch.allclose(fake, ours, atol=1e-4 * float(fake.abs().max()) + 1e-6)


def test_onnx_weights_dequantize_with_a_scalar_scale_and_ort_reproduces_them(per_tensor, tmp_path):
    name, qmodel, twin = per_tensor
    path = export_onnx(twin, (images(1, seed=7),), tmp_path / "model.onnx")
    model = onnx.load(path)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    weights = 0
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            data = inits[node.input[0]]
            if data.dtype == np.int8:
                weights += 1
                assert inits[node.input[1]].size == 1, node.input[0]  # one scale
    assert weights >= 4
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if name == "tensorrt":  # as the graph is written: TensorRT's own fusions are not ORT's
        options.add_session_config_entry("session.disable_quant_qdq", "1")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = images(64, seed=11)
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        fake = qmodel(x).numpy()
    assert (got.argmax(1) == fake.argmax(1)).mean() >= 0.98
    assert np.abs(got - fake).max() <= 0.05 * np.abs(fake).max()


def test_saved_per_tensor_state_rebuilds_the_same_model(per_tensor, tmp_path):
    name, qmodel, _ = per_tensor
    record = {
        "profile": name,
        "method": "minmax",
        "quantize_scan_inputs": False,
        "weight_granularity": "tensor",
    }
    path = save_state(tmp_path / "model.int8.pt", qmodel, "tiny", record)
    rebuilt = load_fake_quant(path, tiny_cnn())
    x = images(8, seed=5)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), qmodel(x))
