"""Gate-aware quantizers, checked directly: fixed scale, zero point 0, 0 and 1 exact."""

from __future__ import annotations

import pytest
import torch
from brevitas.nn import QuantIdentity

from edgegate.errors import BadInput
from edgegate.quant import PROFILES, gate_quantizer, get_profile

EXPECTED_SCALE = {"tensorrt": 1 / 127, "onnxruntime": 1 / 255, "coreml": 1 / 255}


BREVITAS_PROFILES = sorted(n for n, p in PROFILES.items() if p.engine == "brevitas")
# (executorch's gates get their fixed range in PT2E: tests/quant/test_pt2e.py)


@pytest.mark.parametrize("name", BREVITAS_PROFILES)
@pytest.mark.parametrize("training", [False, True])
def test_gate_quantizer_has_fixed_unit_range(name, training):
    quant = QuantIdentity(act_quant=gate_quantizer(get_profile(name)), return_quant_tensor=True)
    quant.train(training)
    gates = torch.sigmoid(torch.randn(1000) * 4)
    out = quant(torch.cat([torch.tensor([0.0, 1.0]), gates]))
    assert float(out.scale) == pytest.approx(EXPECTED_SCALE[name.partition(":")[0]], rel=1e-6)
    assert float(out.zero_point) == 0.0
    assert out.value[0].item() == 0.0 and out.value[1].item() == 1.0
    # every other value is within half a step of its input
    assert (out.value[2:] - gates).abs().max() <= float(out.scale) / 2 + 1e-7


def test_calibration_does_not_move_a_gate_range():
    quant = QuantIdentity(
        act_quant=gate_quantizer(get_profile("onnxruntime")), return_quant_tensor=True
    )
    quant.train()
    for _ in range(5):
        quant(torch.rand(64) * 0.2)  # a gate that never opens far
    assert float(quant(torch.tensor([1.0])).scale) == pytest.approx(1 / 255, rel=1e-6)


def test_profiles_follow_the_targets_rules():
    trt, ort, coreml = (get_profile(n) for n in ("tensorrt", "onnxruntime", "coreml"))
    assert trt.act_signed and not trt.quantize_bias and trt.qdq_on_residual_adds
    assert not ort.act_signed and ort.weight_per_channel and ort.weight_symmetric
    assert coreml.act_bits is None and get_profile("coreml", w8a8=True).act_bits == 8


def test_unknown_profile_is_bad_input():
    with pytest.raises(BadInput, match="tflite"):
        get_profile("tflite")
