"""Hard-swish and hard-sigmoid gates as saturating requantizations (quant.integer_gates): what
the fake-quant model computes, and that ONNX Runtime runs the exported graph in integers."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from brevitas.graph.calibrate import calibration_mode
from brevitas.nn import QuantConv2d
from torch import nn

from edgegate.exporters.onnx.export import export_onnx
from edgegate.models.blocks import SqueezeExcite
from edgegate.quant.calibrate import calibrate
from edgegate.quant.graph import KeepFloat, QuantConfig, quantize_model
from edgegate.quant.integer_gates import IntegerHardswish, SaturatingHardSigmoid
from edgegate.quant.profiles import get_profile
from edgegate.quant.qdq import SixToUnit, to_qdq

# the host's variant, and AVX2's (exact on every x86 host)
ORT_PROFILES = ("onnxruntime", "onnxruntime:x86-avx2")
IN = 6  # input channels
FLOAT_BETWEEN = {"HardSigmoid", "HardSwish", "Mul", "Add", "Sigmoid", "GlobalAveragePool"}


class SEBlock(nn.Module):
    """conv -> hard-swish -> SE (hard-sigmoid gate) -> conv, as in a MobileNetV3 block, with a
    functional hard-swish on the way out (``F.hardswish`` after a linear head)."""

    def __init__(self) -> None:
        super().__init__()
        self.expand = nn.Conv2d(IN, 16, 3, padding=1)  # not an image stem (> 4 channels)
        self.act = nn.Hardswish()
        self.se = SqueezeExcite(16)
        self.project = nn.Conv2d(16, 8, 1)
        self.head = nn.Linear(8, 12)
        self.out = nn.Linear(12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.project(self.se(self.act(self.expand(x))))
        return self.out(F.hardswish(self.head(x.mean((2, 3)))))


def batches(n: int = 3, seed: int = 0) -> list[tuple[torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, IN, 12, 12, generator=gen),) for _ in range(n)]


def quantized(profile: str) -> nn.Module:
    torch.manual_seed(0)
    qmodel = quantize_model(SEBlock().eval(), QuantConfig(get_profile(profile), "minmax"))
    calibrate(qmodel, batches())
    return qmodel


@pytest.fixture(scope="module")
def ort_models() -> dict[str, nn.Module]:
    return {profile: quantized(profile) for profile in ORT_PROFILES}


def test_saturating_gate_is_hardsigmoid_on_the_unit_grid():
    gate = SaturatingHardSigmoid().eval()
    z = torch.cat([torch.tensor([-100.0, -3.0, 3.0, 100.0]), torch.linspace(-4, 4, 801)])
    with torch.no_grad():
        out = gate(z)
        with calibration_mode(gate):  # quantizers off: the clamp keeps it a hard-sigmoid
            off = gate(z)
    assert out[:4].tolist() == [0.0, 0.0, 1.0, 1.0]  # closed and open gates stay exact
    torch.testing.assert_close(out * 255, (out * 255).round(), atol=1e-4, rtol=0)
    assert (out - F.hardsigmoid(z)).abs().max() <= 0.5 / 255 + 1e-6
    torch.testing.assert_close(off, F.hardsigmoid(z))


@pytest.mark.parametrize("profile", ORT_PROFILES)
def test_gates_and_hardswish_become_integer_forms(ort_models, profile):
    qmodel = ort_models[profile]
    modules = dict(qmodel.named_modules())
    assert not any(isinstance(m, (nn.Hardswish, nn.Hardsigmoid)) for m in modules.values())
    hardswish = [m for m in modules.values() if isinstance(m, IntegerHardswish)]
    assert len(hardswish) == 2  # the module and the functional one
    gate = modules["se_gate_gate_quant"]
    assert isinstance(gate, SaturatingHardSigmoid) and gate.offset == 0  # +3 in fc2's bias
    assert qmodel.gate_record["recognised"][0]["quantizer"] == "se_gate_gate_quant"


def test_the_gate_offset_moves_into_the_bias_of_the_layer_before_it():
    model = SEBlock().eval()
    qmodel = quantize_model(model, QuantConfig(get_profile("onnxruntime"), "minmax"))
    folded = qmodel.get_submodule("se.fc2").bias.detach()
    torch.testing.assert_close(folded, model.se.fc2.bias.detach() + 3.0)
    # the float model is not touched, and the fake-quant gate still follows it
    x = batches(1)[0][0]
    with torch.no_grad():
        pre = model.se.fc2(model.se.act(model.se.fc1(model.se.pool(model.act(model.expand(x))))))
        calibrate(qmodel, batches())
        captured = []
        gate = qmodel.get_submodule("se_gate_gate_quant")
        hook = gate.register_forward_hook(lambda _m, _i, out: captured.append(out))
        qmodel(x)
        hook.remove()
    assert (captured[0] - F.hardsigmoid(pre)).abs().max() < 0.1  # quantization error only


def test_tensorrt_keeps_its_fixed_gate_quantizer():
    torch.manual_seed(0)
    qmodel = quantize_model(SEBlock().eval(), QuantConfig(get_profile("tensorrt"), "minmax"))
    modules = dict(qmodel.named_modules())
    assert not any(
        isinstance(m, (IntegerHardswish, SaturatingHardSigmoid)) for m in modules.values()
    )


def test_hardswish_on_a_float_input_is_left_alone():
    """Only a hard-swish after a conv or linear (whose output is quantized) is rewritten."""
    model = nn.Sequential(nn.Hardswish(), nn.Conv2d(3, 4, 1)).eval()
    qmodel = quantize_model(model, QuantConfig(get_profile("onnxruntime"), "minmax"))
    assert not any(isinstance(m, IntegerHardswish) for m in qmodel.modules())


@pytest.mark.parametrize("profile", ORT_PROFILES)
def test_onnxruntime_runs_the_block_in_integers(ort_models, profile, tmp_path):
    """After ORT's QDQ fusions nothing between the graph's input Q and output DQ is float,
    and ORT's output equals the fake-quant model's up to one output step."""
    qmodel = ort_models[profile]
    twin = to_qdq(qmodel)
    assert any(isinstance(m, SixToUnit) for m in twin.modules())
    x = batches(1, seed=5)[0][0]
    path = export_onnx(twin, (x[:1],), tmp_path / "block.onnx")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(tmp_path / "optimized.onnx").graph.node]
    assert not FLOAT_BETWEEN & set(ops), sorted(set(ops))
    assert ops.count("QuantizeLinear") == 1 and ops.count("DequantizeLinear") == 1, ops
    assert ops.count("QLinearAdd") == 2 and ops.count("QLinearMul") == 3, ops
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        fake, ours = qmodel(x).numpy(), twin(x).numpy()
    step = float(qmodel.out_output_quant.act_quant.scale())
    assert np.abs(ours - fake).max() <= step + 1e-6
    assert np.abs(got - fake).max() <= step + 1e-6
    assert (got.argmax(1) == fake.argmax(1)).all()


def test_an_image_stem_stays_float_under_onnxruntime(tmp_path):
    """A conv reading a <= 4-channel model input stays float (ORT's u8 conv over 3 channels is
    slower than its FP32 one), with its hard-swish; the rest is quantized as before."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, 2), nn.Hardswish(), nn.Conv2d(8, 8, 1)).eval()
    for profile, float_stem in (("onnxruntime", True), ("tensorrt", False)):
        qmodel = quantize_model(model, QuantConfig(get_profile(profile), "minmax"))
        modules = dict(qmodel.named_modules())
        assert isinstance(modules["0"], KeepFloat) is float_stem, profile
        assert isinstance(modules["2"], QuantConv2d), profile
    assert not any(isinstance(m, IntegerHardswish) for m in qmodel.modules())
    qmodel = quantize_model(model, QuantConfig(get_profile("onnxruntime"), "minmax"))
    calibrate(qmodel, [(torch.randn(8, 3, 16, 16),)])
    x = torch.randn(2, 3, 16, 16)
    path = export_onnx(to_qdq(qmodel), (x,), tmp_path / "stem.onnx")
    ops = [n.op_type for n in onnx.load(path).graph.node]
    assert ops[0] == "Conv" and ops.count("QuantizeLinear") >= 1
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        want = qmodel(x).numpy()
    outputs = [m for n, m in qmodel.named_modules() if n.endswith("output_quant")]
    step = float(outputs[-1].act_quant.scale())
    assert np.abs(got - want).max() <= step + 1e-6
