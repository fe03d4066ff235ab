"""W4Linear -> torchao's 8da4w linear: the codes carried exactly, the scales as XNNPACK stores
them (bfloat16), the activations quantized per token as the program does."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

from edgegate.errors import BadInput
from edgegate.quant.weight_only import W4Linear
from tests.quant.w4_models import ChainedW4, ParallelW4

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("torchao") is None, reason="torchao not installed"
)


def _per_token_int8(x: torch.Tensor) -> torch.Tensor:
    """Asymmetric int8 per token, quantized and dequantized, written out here: range widened
    to hold 0, scale (max - min) / 255, zero point -128 - round(min / scale)."""
    low = x.amin(-1, keepdim=True).clamp(max=0)
    high = x.amax(-1, keepdim=True).clamp(min=0)
    scale = ((high - low) / 255).clamp_min(torch.finfo(torch.float32).eps)
    zero = (-128 - torch.round(low / scale)).clamp(-128, 127)
    q = (torch.round(x / scale) + zero).clamp(-128, 127)
    return (q - zero) * scale


def test_every_w4linear_becomes_an_int4_linear_with_its_own_codes():
    from torchao.quantization import IntxUnpackedToInt8Tensor

    from edgegate.quant.xnnpack_w4 import to_8da4w, xnnpack_scales

    model = ParallelW4()
    converted = to_8da4w(model)
    for name in ("a", "b", "c"):
        layer, linear = getattr(model, name), getattr(converted, name)
        assert type(linear) is nn.Linear
        weight = linear.weight
        assert isinstance(weight, IntxUnpackedToInt8Tensor)
        assert weight.target_dtype == torch.int4
        assert tuple(weight.block_size) == (1, layer.group_size)
        assert torch.equal(weight.qdata, layer.codes)
        assert torch.equal(weight.scale, xnnpack_scales(layer.scales))
        assert not weight.zero_point.any()
        assert (linear.bias is None) == (layer.bias is None)
    assert isinstance(model.a, W4Linear)  # the original is left as it was


def test_bfloat16_scales_move_by_at_most_half_a_bfloat16_step():
    from edgegate.quant.xnnpack_w4 import scale_rounding, xnnpack_scales

    model = ChainedW4()
    worst = scale_rounding(model)
    assert 0 < worst <= 2.0**-8
    s = model.up.scales
    assert torch.equal(xnnpack_scales(s), s.to(torch.bfloat16).float())


def test_the_converted_layer_computes_per_token_int8_times_its_int4_weight():
    from edgegate.quant.xnnpack_w4 import to_8da4w, xnnpack_scales

    model = ParallelW4()
    converted = to_8da4w(model)
    x = torch.randn(3, 7, 128) * 2
    layer = model.a
    codes = layer.codes.float().view(layer.out_features, -1, layer.group_size)
    weight = (codes * xnnpack_scales(layer.scales).unsqueeze(-1)).flatten(1)
    want = torch.nn.functional.linear(_per_token_int8(x), weight, layer.bias)
    with torch.no_grad():
        got = converted.a(x)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_the_converted_model_stays_near_the_fake_quant_model():
    """8-bit activations and bfloat16 scales cost a little against W4 fake-quant, not a lot."""
    from edgegate.quant.xnnpack_w4 import to_8da4w

    model = ChainedW4()
    x = torch.randn(4, 9, 64)
    with torch.no_grad():
        fake, got = model(x), to_8da4w(model)(x)
    error = float((got - fake).abs().max() / fake.abs().max())
    assert 0 < error < 0.02


def test_torchaos_own_int4_quantizer_would_not_keep_the_codes():
    """Why the tensor is built from the codes: torchao's symmetric int4 quantizer divides the
    largest weight by 7.5 (its range -8..7 halved), so from W4's dequantized weight it derives
    other codes (a -7 becomes -8) and other scales."""
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, PerGroup, quantize_

    layer = W4Linear.from_linear(nn.Linear(64, 32), 32)
    assert (layer.codes == -7).any()
    plain = nn.Linear(64, 32)
    plain.weight.data = layer.weight_dequantized()
    config = Int8DynamicActivationIntxWeightConfig(
        weight_dtype=torch.int4, weight_granularity=PerGroup(32)
    )
    quantize_(plain, config)
    assert not torch.equal(plain.weight.qdata, layer.codes)
    assert not torch.allclose(plain.weight.scale, layer.scales)


def test_an_asymmetric_w4linear_is_refused():
    from edgegate.quant.xnnpack_w4 import check_8da4w, to_8da4w

    model = ParallelW4(symmetric=False)
    with pytest.raises(BadInput, match="'a' is asymmetric.*symmetric"):
        check_8da4w(model)
    with pytest.raises(BadInput, match="asymmetric"):
        to_8da4w(model)


def test_a_group_size_xnnpack_cannot_take_is_refused():
    from edgegate.quant.xnnpack_w4 import check_8da4w

    with pytest.raises(BadInput, match="'a' has group size 16.*multiple of 32"):
        check_8da4w(ParallelW4(group=16))


def test_a_model_without_w4linear_is_refused():
    from edgegate.quant.xnnpack_w4 import check_8da4w

    with pytest.raises(BadInput, match="Sequential has no W4Linear"):
        check_8da4w(nn.Sequential(nn.Linear(4, 4)))
