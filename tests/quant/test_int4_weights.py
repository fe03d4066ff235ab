"""W4Linear as torchao's weight-only int4 tensor: the same codes, scales and outputs."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

from edgegate.quant.weight_only import W4Linear
from tests.quant.w4_models import ChainedW4, ParallelW4

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("torchao") is None, reason="torchao not installed"
)


@pytest.mark.parametrize("symmetric", [True, False])
def test_the_weight_only_model_computes_what_the_w4_model_computes(symmetric):
    from edgegate.quant.int4_weights import weight_only_int4

    model = ParallelW4(symmetric=symmetric)
    converted = weight_only_int4(model)
    x = torch.randn(3, 5, 128)
    with torch.no_grad():
        torch.testing.assert_close(converted(x), model(x), atol=1e-6, rtol=1e-6)
    assert all(isinstance(m, W4Linear) for m in (model.a, model.b, model.c))


def test_asymmetric_codes_go_in_shifted_by_eight():
    from edgegate.quant.int4_weights import int4_codes, int4_tensor

    layer = W4Linear.from_linear(nn.Linear(64, 16), 32, symmetric=False)
    codes, zero = int4_codes(layer)
    assert int(codes.min()) >= -8 and int(codes.max()) <= 7
    assert torch.equal(codes.to(torch.int16) + 8, layer.codes.to(torch.int16))
    assert torch.equal(zero.to(torch.int16) + 8, layer.zero_points.to(torch.int16))
    weight = int4_tensor(layer)
    assert torch.equal(weight.dequantize(), layer.weight_dequantized())


def test_symmetric_codes_go_in_as_they_are_with_zero_points_zero():
    from edgegate.quant.int4_weights import int4_tensor

    layer = ChainedW4().up
    weight = int4_tensor(layer)
    assert torch.equal(weight.qdata, layer.codes)
    assert torch.equal(weight.scale, layer.scales)
    assert not weight.zero_point.any()
    assert weight.activation_quantization is None
    assert torch.equal(weight.dequantize(), layer.weight_dequantized())
