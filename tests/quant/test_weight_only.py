"""W4 weight-only layers: the group round trip, code ranges, AWQ folds and the kept layers."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from edgegate.errors import BadInput
from edgegate.models import load_model
from edgegate.quant.awq import apply_awq, scale_groups
from edgegate.quant.w4_select import plan_w4
from edgegate.quant.weight_only import (
    W4Config,
    W4Linear,
    W8Linear,
    load_weight_only,
    prepare_w4,
    quantize_groups,
)

shapes = st.tuples(
    st.integers(1, 12), st.sampled_from([16, 32, 64]), st.integers(1, 4), st.booleans()
)


@settings(max_examples=40, deadline=None)
@given(shape=shapes, seed=st.integers(0, 10_000), scale=st.floats(1e-3, 1e3))
def test_w4_round_trip(shape, seed, scale):
    out_f, group, groups, symmetric = shape
    torch.manual_seed(seed)
    linear = nn.Linear(group * groups, out_f)
    linear.weight.data.mul_(scale)
    layer = W4Linear.from_linear(linear, group, symmetric)
    codes = layer.codes
    assert codes.dtype == torch.int8 and codes.shape == linear.weight.shape
    assert layer.scales.shape == (out_f, groups)
    if symmetric:
        assert layer.zero_points is None
        assert codes.min() >= -8 and codes.max() <= 7
        # the full range: each group's largest magnitude lands on an end code (-8 or 7)
        grouped = codes.reshape(out_f, groups, group)
        reached = (grouped.amin(-1) == -8) | (grouped.amax(-1) == 7)
        nonzero = linear.weight.reshape(out_f, groups, group).abs().amax(-1) > 0
        assert reached[nonzero].all()
    else:
        assert codes.min() >= 0 and codes.max() <= 15
        assert layer.zero_points.min() >= 0 and layer.zero_points.max() <= 15
    # round to nearest: at most half a step from the float weight, per group
    error = (layer.weight_dequantized() - linear.weight).abs().reshape(out_f, groups, group)
    assert (error <= layer.scales[..., None] * 0.5001).all()
    x = torch.randn(3, group * groups)
    ref = nn.functional.linear(x, layer.weight_dequantized(), linear.bias)
    assert torch.allclose(layer(x), ref)


def test_zero_and_constant_groups_are_exact():
    weight = torch.zeros(3, 32)
    weight[1, :16] = 0.5
    weight[2, 16:] = -0.25
    for symmetric in (True, False):
        codes, scales, zps = quantize_groups(weight, 16, symmetric)
        from edgegate.quant.weight_only import dequantize_groups

        assert torch.equal(dequantize_groups(codes, scales, zps, 16), weight)


def test_group_size_must_divide_and_be_a_power_of_two():
    with pytest.raises(BadInput, match="power of two >= 16"):
        W4Config(group_size=24).check()
    with pytest.raises(BadInput, match="power of two >= 16"):
        W4Config(group_size=8).check()
    plan = plan_w4(load_model("gla-lm").module.eval())
    with pytest.raises(BadInput, match=r"--group-size 64 does not divide the 96 input features"):
        plan.check(64, "gla-lm")


def test_no_linear_to_quantize():
    convs = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 1))
    with pytest.raises(BadInput, match="finds no linear layer to quantize"):
        plan_w4(convs).check(32, "convs")


@pytest.mark.parametrize("spec", ["gla-lm", "hgrn-lm", "gdn-lm"])
def test_gate_projections_stay_higher_precision(spec):
    """Found from the graph (scan decay/beta inputs, recognised output gates), not names."""
    plan = plan_w4(load_model(spec).module.eval())
    kept = {name.rsplit(".", 1)[-1] if "gk_proj" not in name else "gk_proj" for name in plan.kept}
    expected = {
        "gla-lm": {"gk_proj", "g_proj"},
        "hgrn-lm": {"f_proj", "g_proj"},
        "gdn-lm": {"a_proj", "b_proj", "g_proj"},
    }[spec]
    assert kept == expected
    assert "head" in plan.quantized and not set(plan.quantized) & set(plan.kept)


def _tokens(batches: int = 2) -> list[tuple[torch.Tensor, ...]]:
    gen = torch.Generator().manual_seed(0)
    return [(torch.randint(0, 256, (4, 32), generator=gen),) for _ in range(batches)]


def test_awq_fold_preserves_the_float_function():
    model = load_model("gla-lm").module.eval()
    before = [model(*b) for b in _tokens()]
    plan = plan_w4(model)
    groups, skipped = scale_groups(model, plan)
    assert {g.kind for g in groups} == {"layernorm"}
    assert {s["layer"].rsplit(".", 1)[-1] for s in skipped} == {"o_proj", "2"}
    # every alpha but 0: the fold must change weights and keep the function
    record = apply_awq(model, plan, W4Config(alphas=(0.5,)), _tokens())
    assert record["applied"] and all(a["alpha"] == 0.5 for a in record["applied"])
    after = [model(*b) for b in _tokens()]
    for a, b in zip(before, after, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_prepare_w4_replaces_layers_and_reloads(tmp_path):
    model = load_model("gla-lm").module.eval()
    prepared = prepare_w4(model, W4Config(), _tokens())
    record = prepared.w4_record
    assert isinstance(prepared.get_submodule("blocks.0.mixer.q_proj"), W4Linear)
    assert isinstance(prepared.get_submodule("blocks.0.mixer.g_proj"), W8Linear)
    assert isinstance(model.get_submodule("blocks.0.mixer.q_proj"), nn.Linear)  # untouched
    rebuilt = load_weight_only(model, record, prepared.state_dict())
    tokens = _tokens(1)[0]
    assert torch.equal(rebuilt(*tokens), prepared(*tokens))
    floats = prepare_w4(model, W4Config(keep="float", awq=False), _tokens())
    assert isinstance(floats.get_submodule("blocks.0.mixer.g_proj"), nn.Linear)
