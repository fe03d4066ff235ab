"""The integer-friendly forms of edgegate's PT2E flow (``edgegate.quant.pt2e_forms``).

Checked at three levels: the captured graph (a folded gate computes what the hard-sigmoid
did), the converted model (where the quantizers sit) and the lowered program (what XNNPACK
runs, and that it computes what the converted model, validate's reference, computes).
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import tempfile
from importlib import resources
from pathlib import Path

import pytest
import torch
from torch import nn

from edgegate.models.blocks import ConvBNAct
from edgegate.models.mobilenet_v3 import InvertedResidual

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("executorch") is None,
    reason="executorch is not installed (pip install 'edgegate-nn[executorch]')",
)


def _target(node) -> str:
    return str(node.target) if node.op == "call_function" else ""


class Gates(nn.Module):
    """Hard-sigmoid gates off a biased conv, a bias-less conv and a linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)
        self.bare = nn.Conv2d(4, 4, 1, bias=False)
        self.linear = nn.Linear(4, 4)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gated = x * self.gate(self.conv(x)) + x * self.gate(self.bare(x))
        return gated, self.gate(self.linear(x.mean((2, 3))))


class Unfoldable(nn.Module):
    """Hard-sigmoids the fold must leave alone: one not read off a layer, one whose layer
    output has another reader, one whose layer shares its weight."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)
        self.shared = nn.Conv2d(4, 4, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        twice = torch.nn.functional.conv2d(x, self.shared.weight)
        return self.gate(x + 1.0) + self.gate(y) * y + self.gate(self.shared(x)) + twice


def _captured(module: nn.Module, x: torch.Tensor) -> torch.fx.GraphModule:
    return torch.export.export(module.eval(), (x,)).module()


def _hardsigmoids(graph_module) -> list:
    return [n for n in graph_module.graph.nodes if _target(n) == "aten.hardsigmoid.default"]


def test_folded_gates_compute_what_the_hard_sigmoids_did():
    from edgegate.quant.pt2e_forms import fold_hardsigmoid_gates

    torch.manual_seed(0)
    module = Gates().eval()
    x = 4 * torch.randn(3, 4, 5, 5)  # wide enough to reach both saturations
    before = {name: p.detach().clone() for name, p in module.named_parameters()}
    captured = _captured(module, x)
    folded = fold_hardsigmoid_gates(captured, _hardsigmoids(captured))
    assert len(folded) == 3 and not _hardsigmoids(captured)
    for clamp in folded:
        assert _target(clamp) == "aten.hardtanh.default" and clamp.args[1:] == (0.0, 1.0)
    with torch.no_grad():
        gates = module.gate(module.conv(x))
        assert bool((gates == 0).any()) and bool((gates == 1).any())
        for want, got in zip(module(x), captured(x), strict=True):
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)  # float rounding
    # the fold rewrote the capture's own tensors: the model it came from is untouched
    for name, p in module.named_parameters():
        assert torch.equal(p, before[name]), name


def test_gates_that_do_not_fold_are_left_as_they_are():
    from edgegate.quant.pt2e_forms import fold_hardsigmoid_gates, foldable_layer

    module = Unfoldable().eval()
    x = torch.randn(2, 4, 5, 5)
    captured = _captured(module, x)
    gates = _hardsigmoids(captured)
    assert len(gates) == 3 and all(foldable_layer(g) is None for g in gates)
    assert fold_hardsigmoid_gates(captured, gates) == []
    assert len(_hardsigmoids(captured)) == 3


class TinyMobile(nn.Module):
    """A hard-swish image stem, one MobileNetV3 inverted residual with SE, a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvBNAct(3, 8, 3, 2, act="hardswish")
        self.block = InvertedResidual(8, 3, 16, 8, True, "hardswish", 1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(8, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.stem(x)))


def _convert(model: nn.Module, images: torch.Tensor, gate_rules: bool):
    from edgegate.quant.pt2e import quantize_xnnpack

    return quantize_xnnpack(model, (images[:1],), [(0,)], [(images,)], gate_rules=gate_rules)


@pytest.fixture(scope="module")
def tiny_mobile():
    """(model, images, the model converted with edgegate's rules)."""
    torch.manual_seed(0)
    model = TinyMobile().eval()
    images = torch.randn(24, 3, 16, 16)
    return model, images, _convert(model, images, gate_rules=True)


def test_the_se_gate_is_its_layer_clamped_onto_the_unit_grid(tiny_mobile):
    from edgegate.quant.pt2e import GATE_SCALE, GATE_ZERO_POINT

    _, _, converted = tiny_mobile
    graph = converted.graph
    assert not _hardsigmoids(converted)
    (gate,) = [n for n in graph.nodes if _target(n) == "aten.hardtanh.default"]
    layer = gate.args[0]
    # the layer reads int8 activations and weights and has no quantizer of its own: its sums
    # go through the clamp onto the gate grid
    assert _target(layer) == "aten.conv2d.default" and list(layer.users) == [gate]
    assert _target(layer.args[0]).startswith("quantized_decomposed.dequantize_per_tensor")
    assert _target(layer.args[1]).startswith("quantized_decomposed.dequantize_per_channel")
    (quantize,) = list(gate.users)
    assert _target(quantize).startswith("quantized_decomposed.quantize_per_tensor")
    assert float(quantize.args[1]) == pytest.approx(GATE_SCALE)
    assert int(quantize.args[2]) == GATE_ZERO_POINT


def test_the_image_stem_reads_the_float_input(tiny_mobile):
    from edgegate.quant.pt2e import quantized_inputs

    _, _, converted = tiny_mobile
    convs = [n for n in converted.graph.nodes if _target(n) == "aten.conv2d.default"]
    stem, rest = convs[0], convs[1:]
    assert stem.args[0].op == "placeholder" and not quantized_inputs(stem)
    assert any(_target(u).startswith("quantized_decomposed.quantize") for u in stem.users)
    assert rest and all(quantized_inputs(n) for n in rest)


def test_the_forms_stay_close_to_float(tiny_mobile):
    model, images, converted = tiny_mobile
    with torch.no_grad():
        want, got = model(images), converted(images)
    assert float((got - want).abs().max()) < 0.1 * float(want.abs().max())


def _xnnpack_graphs(path: Path) -> list[dict]:
    """The XNNPACK graphs a .pte's delegates carry, as flatc reads them with XNNPACK's schema."""
    from executorch.backends.xnnpack import serialization
    from executorch.backends.xnnpack.serialization.xnnpack_graph_serialize import XNNHeader
    from executorch.exir._serialize._flatbuffer import _flatc_decompile
    from executorch.exir._serialize._program import deserialize_pte_binary

    program = deserialize_pte_binary(path.read_bytes()).program
    graphs = []
    for delegate in program.execution_plan[0].delegates:
        payload = bytes(program.backend_delegate_data[delegate.processed.index].data)
        header = XNNHeader.from_bytes(payload[: XNNHeader.EXPECTED_LENGTH])
        start = header.flatbuffer_offset
        with tempfile.TemporaryDirectory() as tmp:
            schema = Path(tmp, "schema.fbs")
            schema.write_bytes(resources.files(serialization).joinpath("schema.fbs").read_bytes())
            Path(tmp, "graph.bin").write_bytes(payload[start : start + header.flatbuffer_size])
            _flatc_decompile(tmp, str(schema), str(Path(tmp, "graph.bin")))
            text = Path(tmp, "graph.json").read_text()
        graphs.append(json.loads(re.sub(r"(?<![\w\"])[-+]?(inf|nan)(?![\w\"])", "null", text)))
    return graphs


def _nodes(graph: dict) -> list[tuple[str, tuple[str, ...], str]]:
    """(kind, input datatypes, output datatype) of each node, datatypes as 'fp32'/'qint8'."""
    values = [v["xvalue_union"] for v in graph["xvalues"]]
    values = [v.get("tensor_value", v) for v in values]  # a quantized value wraps its tensor
    dtypes = {v.get("id_out"): v.get("datatype", "") for v in values}
    nodes = []
    for node in graph["xnodes"]:
        fields = node["xnode_union"]
        ins = [fields[k] for k in ("input1_id", "input_id", "input2_id") if k in fields]
        name = lambda i: dtypes.get(i, "").removeprefix("xnn_datatype_")  # noqa: E731
        kind = node["xnode_union_type"].removeprefix("XNN")
        nodes.append((kind, tuple(name(i) for i in ins), name(fields.get("output_id"))))
    return nodes


def _float_nodes(path: Path) -> list[tuple[str, tuple[str, ...], str]]:
    return [
        node
        for graph in _xnnpack_graphs(path)
        for node in _nodes(graph)
        if "fp32" in (*node[1], node[2])
    ]


@pytest.fixture(scope="module")
def lowered(tiny_mobile, tmp_path_factory):
    """The model converted with and without edgegate's rules, lowered: {gate_rules: path}."""
    from edgegate.exporters.executorch import export_pte

    model, images, converted = tiny_mobile
    plain = _convert(model, images, gate_rules=False)
    tmp = tmp_path_factory.mktemp("pte")
    names = {"input_names": ["images"], "output_names": ["logits"], "dynamic_dims": [(0,)]}
    return {
        rules: export_pte(module, (images[:1],), tmp / f"{rules}.pte", **names).path
        for rules, module in ((True, converted), (False, plain))
    }


# what stays float in XNNPACK's graph: the model's float input (its NHWC transpose and the
# stem), the converts between int8 and the float input and output, and hard-swish between
# two converts, which XNNPACK's graph optimiser fuses into one int8 lookup-table op
_FLOAT_KINDS = {"StaticTranspose", "Conv2d", "Convert", "Hardswish"}


@pytest.mark.slow
def test_xnnpack_runs_gates_and_se_in_int8(lowered):
    floats = _float_nodes(lowered[True])
    assert {kind for kind, _, _ in floats} <= _FLOAT_KINDS, floats
    assert sum(kind == "Conv2d" for kind, _, _ in floats) == 1  # the stem
    nodes = [node for graph in _xnnpack_graphs(lowered[True]) for node in _nodes(graph)]
    for before, (kind, _, _), after in zip(nodes, nodes[1:], nodes[2:], strict=False):
        if kind == "Hardswish":  # int8 -> float -> hard-swish -> int8
            assert before[0] == after[0] == "Convert" and before[1] == ("qint8",), nodes
    # XNNPACK's own flow: the decomposed hard-sigmoid runs in float, and the stem in int8
    plain = _float_nodes(lowered[False])
    assert {"Add", "Clamp", "Div"} <= {kind for kind, _, _ in plain}, plain
    assert ("Conv2d", ("fp32",), "fp32") not in plain


@pytest.mark.slow
def test_the_program_computes_what_the_converted_model_does(tiny_mobile, lowered):
    from executorch.runtime import Runtime

    _, images, converted = tiny_mobile
    method = Runtime.get().load_program(lowered[True]).load_method("forward")
    (output,) = [n for n in converted.graph.nodes if n.op == "output"]
    last = output.args[0][0] if isinstance(output.args[0], tuple | list) else output.args[0]
    step = float(last.args[1])  # the logits' quantization step
    with torch.no_grad():
        for feed in [*(image[None] for image in images[:6]), images[6:9]]:  # and a batch of 3
            got = method.execute((feed,))[0]
            want = converted(feed)
            assert got.shape == want.shape
            assert float((got - want).abs().max()) <= step * (1 + 1e-4)
    assert math.isfinite(step) and step > 0
