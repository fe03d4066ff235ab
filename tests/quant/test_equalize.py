"""Cross-layer equalization (edgegate.quant.equalize): same function, balanced ranges, SE
folded exactly, non-homogeneous activations left alone, a changed function undone."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from edgegate.errors import BadInput
from edgegate.models import load_model
from edgegate.models.blocks import ConvBNAct, SqueezeExcite
from edgegate.quant.batch_norm import fold_batch_norm
from edgegate.quant.equalize import Equalization, equalize_graph, range_ratio, relative_error
from edgegate.quant.graph import QuantConfig, quantize_model, trace
from edgegate.quant.profiles import get_profile

ZOO_TOLERANCE = 1e-5  # relative: the equalized float model computes what the float one did


def _outputs(module: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        out = module(x)
    return list(out) if isinstance(out, tuple) else [out]


def _factors(channels: int, decades: float, seed: int) -> torch.Tensor:
    order = torch.randperm(channels, generator=torch.Generator().manual_seed(seed))
    return torch.logspace(-decades, 0, channels)[order]


def _spread(conv: nn.Conv2d, decades: float, seed: int) -> None:
    """Scale the conv's output channels over ``decades`` orders of magnitude, in a seeded
    shuffled order."""
    with torch.no_grad():
        conv.weight.mul_(_factors(conv.out_channels, decades, seed).view(-1, 1, 1, 1))


def unbalance(graph_module: torch.fx.GraphModule, decades: float = 2.0) -> None:
    """What BN folding does to a trained depthwise conv: its channels spread over ``decades``
    orders of magnitude, the projection's input channels the other way (same function, the
    ReLU between them is homogeneous), so every channel still matters to the output."""
    dw, project = graph_module.get_submodule("dw.0"), graph_module.get_submodule("project.0")
    factors = _factors(dw.out_channels, decades, seed=1)
    with torch.no_grad():
        dw.weight.mul_(factors.view(-1, 1, 1, 1))
        dw.bias.mul_(factors)
        project.weight.div_(factors.view(1, -1, 1, 1))


class DepthwiseBlock(nn.Module):
    """1x1 expand -> ReLU -> depthwise -> ReLU -> [SE] -> 1x1 project: a MobileNet block
    whose activations commute with channel scales."""

    def __init__(self, se: bool = False) -> None:
        super().__init__()
        self.expand = ConvBNAct(4, 16, 1, act="relu")
        self.dw = ConvBNAct(16, 16, 3, groups=16, act="relu")
        self.se = SqueezeExcite(16, 8) if se else nn.Identity()
        self.project = ConvBNAct(16, 8, 1, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.se(self.dw(self.expand(x))))


def depthwise_block(se: bool = False) -> DepthwiseBlock:
    torch.manual_seed(0)
    model = DepthwiseBlock(se)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, 0.0, 0.5)
    return model.eval()


def images(n: int = 8, size: int = 12, channels: int = 4, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, channels, size, size, generator=generator)


def folded(model: nn.Module) -> torch.fx.GraphModule:
    graph_module = trace(model)
    fold_batch_norm(graph_module)
    return graph_module


def equalized(model: nn.Module) -> tuple[torch.fx.GraphModule, Equalization]:
    """A traced copy of ``model``, BN folded and equalized, as ``quantize_model`` makes it."""
    graph_module = folded(copy.deepcopy(model).eval())
    return graph_module, equalize_graph(graph_module)


def per_tensor_int8(graph_module: torch.fx.GraphModule) -> None:
    """Round every conv and linear weight to int8 with one scale per tensor, in place."""
    with torch.no_grad():
        for module in graph_module.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                scale = module.weight.abs().max() / 127
                module.weight.copy_(torch.round(module.weight / scale) * scale)


# --- the zoo's vision models ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mobilenet-v3-se", "mobilenet-v3-large-se", "gc-mobilenet"])
def test_equalized_zoo_model_computes_the_same_function(name):
    model = load_model(name).module.eval()
    x = images(4, 32, channels=3, seed=3)
    graph_module, record = equalized(model)
    assert record.applied and record.regions, record.line()
    error = relative_error(_outputs(model, x), _outputs(graph_module, x))
    assert error <= ZOO_TOLERANCE, error
    changed = [name for name, (before, after) in record.ratios.items() if before != after]
    assert changed, "equalization moved no weights"
    assert model.training is False and not isinstance(model, torch.fx.GraphModule)


def test_mobilenet_se_blocks_are_equalized_through_the_gate():
    """A ReLU block's depthwise output feeds the SE's pooling and the projection: both are
    sinks of one region (the SE's first conv rescaled with the projection)."""
    _, record = equalized(load_model("mobilenet-v3-large-se").module)
    se_regions = [r for r in record.regions if any(s.endswith(".fc1") for s in r["sinks"])]
    assert se_regions, record.regions
    for region in se_regions:
        block = region["sinks"][0].rsplit(".block.", 1)[0]
        assert any(s.startswith(block) and s.endswith(".0") for s in region["sinks"]), region


def test_hard_swish_pairs_of_the_zoo_are_listed_not_equalized():
    _, record = equalized(load_model("mobilenet-v3-se").module)
    through = {pair["through"] for pair in record.not_homogeneous}
    assert through == {"Hardswish"}, through
    equalized_layers = {n for r in record.regions for n in (*r["sources"], *r["sinks"])}
    for pair in record.not_homogeneous:  # a source whose only consumer is a hard-swish
        assert pair["source"] not in {s for r in record.regions for s in r["sources"]}, pair
    assert equalized_layers


# --- ranges -----------------------------------------------------------------------------------


def test_range_ratio_ignores_pruned_channels():
    weight = torch.tensor([[1.0, -4.0], [0.0, 0.0], [0.5, 0.25]])
    assert range_ratio(weight) == 8.0
    assert range_ratio(torch.zeros(3, 2)) is None


def test_equalization_balances_a_spread_depthwise_conv_and_per_tensor_int8_gains():
    model = depthwise_block()
    x = images()
    reference = _outputs(model, x)
    graph_module, plain = folded(model), folded(model)
    unbalance(graph_module)
    unbalance(plain)
    assert relative_error(reference, _outputs(plain, x)) <= ZOO_TOLERANCE
    record = equalize_graph(graph_module, (x,))
    assert record.applied and record.max_relative_error <= ZOO_TOLERANCE
    before, after = record.ratios["dw.0"]
    assert before > 50 and after < before / 4, record.ratios
    # per-tensor int8 weights lose less of the function once equalized
    per_tensor_int8(plain)
    per_tensor_int8(graph_module)
    error_plain = relative_error(reference, _outputs(plain, x))
    error_equalized = relative_error(reference, _outputs(graph_module, x))
    assert error_equalized < error_plain / 10, (error_plain, error_equalized)


def test_summary_and_report_hold_each_regions_ratios():
    graph_module = folded(depthwise_block())
    unbalance(graph_module)
    record = equalize_graph(graph_module)
    report = record.to_dict()
    assert report["applied"] and report["reverted"] is None
    assert report["max_relative_error"] is None  # no example inputs, no check
    summary = report["summary"]
    assert summary["regions"] == len(report["regions"]) >= 2
    assert summary["worst_ratio_after"] < summary["worst_ratio_before"]
    for region in report["regions"]:
        assert set(region["range_ratio"]) == {*region["sources"], *region["sinks"]}
        assert all(len(pair) == 2 for pair in region["range_ratio"].values())
    assert "regions" in record.line() and "->" in record.line()


# --- squeeze-excitation -----------------------------------------------------------------------


def test_se_gate_sees_what_it_saw_and_its_first_conv_is_rescaled():
    model = depthwise_block(se=True)
    x = images()
    graph_module = folded(model)
    gates: list[torch.Tensor] = []
    hook = graph_module.get_submodule("se.gate").register_forward_hook(
        lambda module, args, out: gates.append(out.detach().clone())
    )
    fc1_before = graph_module.get_submodule("se.fc1").weight.detach().clone()
    reference = _outputs(graph_module, x)
    record = equalize_graph(graph_module, (x,))
    after = _outputs(graph_module, x)
    hook.remove()
    region = next(r for r in record.regions if "se.fc1" in r["sinks"])
    assert region["sources"] == ["dw.0"] and set(region["sinks"]) == {"se.fc1", "project.0"}
    assert not torch.allclose(graph_module.get_submodule("se.fc1").weight, fc1_before)
    assert torch.allclose(gates[0], gates[1], rtol=0, atol=1e-6)  # the gate is unchanged
    assert relative_error(reference, after) <= ZOO_TOLERANCE


# --- what is not equalized --------------------------------------------------------------------


class ThroughActivations(nn.Module):
    """conv -> hard-swish -> conv -> ReLU6 -> conv: no pair commutes with channel scales."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(4, 8, 1), nn.Conv2d(8, 8, 1), nn.Conv2d(8, 4, 1)
        self.hswish, self.relu6 = nn.Hardswish(), nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(self.relu6(self.b(self.hswish(self.a(x)))))


def test_hard_swish_and_relu6_pairs_are_left_alone():
    torch.manual_seed(0)
    graph_module = trace(ThroughActivations().eval())
    state = {k: v.clone() for k, v in graph_module.state_dict().items()}
    record = equalize_graph(graph_module, (images(),))
    assert not record.regions and not record.applied
    assert record.not_homogeneous == [
        {"source": "a", "sink": "b", "through": "Hardswish"},
        {"source": "b", "sink": "c", "through": "ReLU6"},
    ]
    for key, value in graph_module.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert record.line() == "no layer pair can be equalized exactly"


class Squared(nn.Module):
    """conv -> ReLU -> y * y -> conv: brevitas takes the multiply as scale-invariant, but both
    factors carry the scale, so its equalization would change the function."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(4, 8, 1), nn.Conv2d(8, 4, 1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.a(x))
        return self.b(y * y)


def test_an_equalization_that_changes_the_function_is_undone():
    torch.manual_seed(0)
    model = Squared().eval()
    _spread(model.a, 2.0, seed=4)
    graph_module = trace(model)
    x = images()
    reference = _outputs(graph_module, x)
    record = equalize_graph(graph_module, (x,))
    assert record.regions and not record.applied
    assert record.reverted and "moved by" in record.reverted
    assert record.max_relative_error > 1e-3
    assert torch.equal(_outputs(graph_module, x)[0], reference[0])  # weights restored
    assert record.line().startswith("not applied:")


# --- in quantize_model ------------------------------------------------------------------------


def test_quantize_model_equalizes_the_folded_graph_before_quantizers_go_in():
    model = depthwise_block(se=True)
    x = images()
    config = QuantConfig(get_profile("onnxruntime:x86-avx2", granularity="tensor"), equalize=True)
    qmodel = quantize_model(model, config, (x,))
    record = qmodel.equalization
    assert isinstance(record, Equalization) and record.applied
    assert record.max_relative_error <= ZOO_TOLERANCE
    plain = quantize_model(model, QuantConfig(get_profile("onnxruntime:x86-avx2")))
    assert not hasattr(plain, "equalization")
    assert model.dw[0].weight.shape == (16, 1, 3, 3)  # the float model is left as it was
    assert isinstance(model.dw[1], nn.BatchNorm2d)


def test_unknown_weight_granularity_is_bad_input():
    with pytest.raises(BadInput, match="unknown weight granularity 'row'"):
        get_profile("onnxruntime", granularity="row")
