"""PT2E INT8 for ExecuTorch: XNNPACK's quantizer with edgegate's gate and scan rules.

Checked on the converted graph, where every quantize node carries its scale and zero point:
gate outputs get the fixed [0, 1] grid whatever the calibration data, the scan region has no
quantize/dequantize, and the rest is calibrated (its parameters follow the data).
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

from edgegate.errors import BadInput
from edgegate.models.blocks import Gate
from tests.quant.tiny_models import mixer_net, tiny_cnn

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("executorch") is None,
    reason="executorch is not installed (pip install 'edgegate-nn[executorch]')",
)


class GatedHead(nn.Module):
    """The tiny SE CNN plus a GC-style decision: logits and sigmoid(linear(features))."""

    def __init__(self) -> None:
        super().__init__()
        self.body = tiny_cnn()
        self.decision = nn.Linear(10, 1)
        self.gate = Gate("sigmoid")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.body(x)
        return logits, self.gate(self.decision(logits)).squeeze(-1)


def _quantize(module, example, dims, batches, **options):
    from edgegate.quant.pt2e import quantize_xnnpack

    return quantize_xnnpack(module, example, dims, batches, **options)


def _after(graph_module, op: str) -> dict[str, tuple[float, int]]:
    """(scale, zero point) of the quantize node right after each ``op`` node, by node name."""
    from edgegate.quant.pt2e import quantize_nodes

    return {
        str(q.args[0].name): (float(q.args[1]), int(q.args[2]))
        for q in quantize_nodes(graph_module)
        if str(q.args[0].target) == op
    }


@pytest.fixture(scope="module")
def gated_twice():
    """The same model calibrated on data a hundred times apart in scale."""
    torch.manual_seed(0)
    module = GatedHead().eval()
    images = torch.randn(16, 3, 16, 16)
    return [
        _quantize(module, (images[:1],), [(0, 2, 3)], [(images * scale,)]) for scale in (1.0, 100.0)
    ]


def test_gate_outputs_get_the_fixed_unit_grid_whatever_the_data(gated_twice):
    from edgegate.quant.pt2e import GATE_SCALE, GATE_ZERO_POINT

    for converted in gated_twice:
        hard = _after(converted, "aten.hardtanh.default")  # the SE gate, folded into its conv
        soft = _after(converted, "aten.sigmoid.default")  # the decision
        assert len(hard) == 1 and len(soft) == 1
        for scale, zero_point in [*hard.values(), *soft.values()]:
            assert scale == pytest.approx(GATE_SCALE) and zero_point == GATE_ZERO_POINT
    # 0 and 1 land on codes exactly: -128 and 127
    assert round(0.0 / GATE_SCALE) + GATE_ZERO_POINT == -128
    assert round(1.0 / GATE_SCALE) + GATE_ZERO_POINT == 127


def test_without_gate_rules_the_gates_are_observed_like_any_activation():
    """XNNPACK's own flow (the benchmarks' baseline) calibrates the gate outputs from data:
    what edgegate's rules replace with the fixed grid."""
    from edgegate.quant.pt2e import GATE_SCALE

    torch.manual_seed(0)
    module = GatedHead().eval()
    images = torch.randn(16, 3, 16, 16)
    plain = _quantize(module, (images[:1],), [(0, 2, 3)], [(images,)], gate_rules=False)
    hard = _after(plain, "aten.hardsigmoid.default")
    assert hard and all(scale != pytest.approx(GATE_SCALE) for scale, _ in hard.values())


def test_the_other_activations_are_calibrated(gated_twice):
    """The same quantize nodes, calibrated on data 100x apart: their scales follow the data
    (the test would pass vacuously if nothing were calibrated)."""
    from edgegate.quant.pt2e import quantize_nodes

    scales = [
        sorted(float(q.args[1]) for q in quantize_nodes(c) if float(q.args[1]) != 1 / 255)
        for c in gated_twice
    ]
    assert scales[0] and len(scales[0]) == len(scales[1])
    assert scales[1][-1] > 10 * scales[0][-1]


def test_the_gate_is_consumed_on_its_own_grid(gated_twice):
    """The SE multiply reads the gate through one quantize/dequantize pair, the fixed one."""
    from edgegate.quant.pt2e import GATE_SCALE, _target

    graph = gated_twice[1].graph
    gate = next(n for n in graph.nodes if _target(n) == "aten.hardtanh.default")
    (quantize,) = list(gate.users)
    (dequantize,) = list(quantize.users)
    assert _target(dequantize).startswith("quantized_decomposed.dequantize_per_tensor")
    assert float(dequantize.args[1]) == pytest.approx(GATE_SCALE)
    assert any(_target(u) == "aten.mul.Tensor" for u in dequantize.users)


@pytest.mark.parametrize("kind", ["gla", pytest.param("delta", marks=pytest.mark.slow)])
def test_the_scan_region_stays_float(kind):
    from edgegate.quant.pt2e import _target, quantized_inputs, scan_region

    module = mixer_net(kind)
    x = torch.randn(4, 12, 8)
    converted = _quantize(module, (x[:1],), [(0, 1)], [(x,)])
    graph = converted.graph
    region = scan_region(graph)
    scans = [n for n in region if _target(n).startswith("edgegate.")]
    assert scans, "the converted graph lost its scan node"
    # walk the region: no node of it is a quantize/dequantize, and what it reads is float
    for node in region:
        assert "quantized_decomposed" not in _target(node), node.name
    projections = [n for n in region if _target(n) == "aten.linear.default"]
    assert projections and not any(_weight_quantized(p) for p in projections)
    # outside the region, the projections are quantized (the model is INT8 after all)
    outside = [n for n in graph.nodes if _target(n) == "aten.linear.default" and n not in region]
    assert outside and all(quantized_inputs(n) for n in outside)


def test_the_blocks_output_norm_stays_float_up_to_its_projection():
    from edgegate.quant.pt2e import _target, quantized_inputs, scan_region

    module = mixer_net("gla")
    x = torch.randn(4, 12, 8)
    graph = _quantize(module, (x[:1],), [(0, 1)], [(x,)]).graph
    region = scan_region(graph)
    norms = [n for n in graph.nodes if "layer_norm" in _target(n)]
    assert norms and all(n in region for n in norms)
    for norm in norms:  # read float from the scan and passed on float
        assert not any("quantize" in _target(u) for u in norm.users), norm.name
    (out_proj,) = [n for n in graph.nodes if n.meta.get("nn_module_stack") and any(
        str(path).endswith("o_proj") for path, _ in n.meta["nn_module_stack"].values()
    ) and _target(n) == "aten.linear.default"]  # fmt: skip
    assert out_proj not in region and quantized_inputs(out_proj)


def _weight_quantized(linear) -> bool:
    weight = linear.args[1]
    return str(getattr(weight, "target", "")).startswith("quantized_decomposed.dequantize")


@pytest.mark.slow
def test_quantize_scan_inputs_quantizes_the_projections_too():
    from edgegate.quant.pt2e import _target

    module = mixer_net("gla")
    x = torch.randn(4, 12, 8)
    converted = _quantize(module, (x[:1],), [(0, 1)], [(x,)], quantize_scan_inputs=True)
    linears = [n for n in converted.graph.nodes if _target(n) == "aten.linear.default"]
    assert linears and all(_weight_quantized(n) for n in linears)


def test_converted_model_stays_close_to_float():
    module = tiny_cnn()
    images = torch.randn(32, 3, 16, 16)
    converted = _quantize(module, (images[:1],), [(0, 2, 3)], [(images,)], method="mse")
    with torch.no_grad():
        want, got = module(images), converted.eval()(images)
    assert float((got - want).abs().max()) < 0.1 * float(want.abs().max())


def test_percentile_has_no_pt2e_observer():
    from edgegate.quant.pt2e import gate_aware_quantizer

    with pytest.raises(BadInput, match="percentile"):
        gate_aware_quantizer("percentile")


def test_the_reference_round_trips_through_a_file(tmp_path, gated_twice):
    from edgegate.quant.pt2e import load_reference, save_reference

    images = torch.randn(5, 3, 16, 16)
    converted = gated_twice[0]
    path = save_reference(converted, (images[:1],), [(0, 2, 3)], tmp_path / "ref.pt2")
    loaded = load_reference(path).eval()
    with torch.no_grad():
        for want, got in zip(converted(images), loaded(images), strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=0)
    (tmp_path / "other.pt2").write_bytes(b"junk")
    with pytest.raises(BadInput, match="cannot read"):
        load_reference(tmp_path / "other.pt2")


class PositionLookup(nn.Module):
    """Embeds tokens plus positions ``arange(T) + offset`` (an integer add), as transformers'
    LMs compute position ids; XNNPACK's pre-pass turns the offset into a float buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens = nn.Embedding(16, 8)
        self.positions = nn.Embedding(64, 8)
        self.head = nn.Linear(8, 16)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1]) + 2
        return self.head(self.tokens(tokens) + self.positions(positions))


@pytest.mark.parametrize("gate_rules", [True, False])
def test_integer_arithmetic_stays_integer_through_calibration(gate_rules):
    module = PositionLookup().eval()
    tokens = torch.randint(0, 16, (8, 12), generator=torch.Generator().manual_seed(0))
    converted = _quantize(module, (tokens[:2],), [(0, 1)], [(tokens,)], gate_rules=gate_rules)
    with torch.no_grad():
        want, got = module(tokens), converted.eval()(tokens)
    assert got.shape == want.shape
    assert float((got - want).abs().max()) < 0.1 * float(want.abs().max())
