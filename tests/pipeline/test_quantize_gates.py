"""`edgegate quantize` on a user model built like torchvision's and timm's SE networks: every
gate gets its fixed [0, 1] quantizer, BN folds whatever its class, and the records say so."""

from __future__ import annotations

import json

import onnx
import pytest
from onnx import numpy_helper

from edgegate.manifest import read_manifest

MODEL = "tests.recognise.lookalikes:lookalike_net_hand_written"
SE_PATHS = ["blocks.0.se", "blocks.1.se", "blocks.2.se", "blocks.3.se"]


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    from edgegate.cli import main

    out = tmp_path_factory.mktemp("lookalike-int8")
    args = ["quantize", MODEL, "--trust-code", "--task", "image", "--calib-samples", "64"]
    assert main([*args, "--report", "-o", str(out)]) == 0
    return out


def _gate_quant_scales(path) -> list[float]:
    """Scale of the QuantizeLinear right after each Sigmoid/HardSigmoid (None: no Q there),
    then the [0, 1] grid of each hard-sigmoid gate exported as a saturating requantization
    (u8 at 6/255 with zero point 0, read back at 1/255: edgegate.quant.integer_gates)."""
    graph = onnx.load(path).graph
    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    scales = []
    for node in graph.node:
        if node.op_type in ("Sigmoid", "HardSigmoid"):
            q = [c for c in consumers[node.output[0]] if c.op_type == "QuantizeLinear"]
            scales.append(float(values[q[0].input[1]]) if q else None)
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or float(values[node.input[1]]) != pytest.approx(
            6 / 255
        ):
            continue
        assert int(values[node.input[2]]) == 0
        reads = [c for c in consumers[node.output[0]] if c.op_type == "DequantizeLinear"]
        if any(_is_hardswish(graph, node, read, consumers) for read in reads):
            continue  # x * hardsigmoid(x): an activation, not a gate
        scales += [float(values[c.input[1]]) for c in reads]
    return scales


def _is_hardswish(graph, quant, read, consumers) -> bool:
    """Whether the saturating requantization ``quant`` of ``x + 3``, read back by ``read``,
    multiplies ``x`` itself (hard-swish) rather than another tensor (a gate)."""
    producers = {out: n for n in graph.node for out in n.output}
    add = producers.get(quant.input[0])
    if add is None or add.op_type != "Add":
        return False
    muls = [c for c in consumers[read.output[0]] if c.op_type == "Mul"]
    return any(set(add.input) & set(mul.input) for mul in muls)


def test_every_gate_gets_one_fixed_range_quantizer_and_no_batch_norm_ships(quantized):
    graph = onnx.load(quantized / "model.int8.onnx").graph
    assert not [n for n in graph.node if n.op_type == "BatchNormalization"]
    scales = _gate_quant_scales(quantized / "model.int8.onnx")
    gate_scales = [s for s in scales if s is not None]
    assert gate_scales == pytest.approx([1 / 255] * 5)
    assert len(scales) - len(gate_scales) == 1  # SiLU's own sigmoid (x * sigmoid(x)) is no gate


def test_report_and_manifest_list_each_gate_and_the_unrecognised_block(quantized):
    report = json.loads((quantized / "report.json").read_text())
    gates = report["gates"]
    assert [g["path"] for g in gates["recognised"]] == [*SE_PATHS, ""]
    assert gates["max_flip_rate"] is not None and gates["max_flip_rate"] <= 1.0
    assert [item["path"] for item in gates["unrecognised"]] == ["blocks.4.se"]
    assert any("HandWrittenSE at blocks.4.se" in w for w in report["warnings"])
    assert report["onnx_vs_fake_quant"]["decisive_top1_agreement"] in (100.0, None)
    assert report["kernel_agreement"] >= 99.0
    assert report["kernel_decisive_agreement"] in (100.0, None)  # None: every row a near-tie
    manifest = read_manifest(quantized)
    assert [g["path"] for g in manifest.quant["gates"]] == [*SE_PATHS, ""]
    markdown = (quantized / "quant_report.md").read_text()
    assert "## Gates" in markdown and "class torchvision.ops.misc.SqueezeExcitation" in markdown
