"""ONNX for TensorRT: plugin nodes only (no same-named local function), checked, fp32 state."""

from __future__ import annotations

import re
from importlib.resources import files

import onnx
import pytest
import torch
from torch import nn

from edgegate.errors import BadInput
from edgegate.exporters.onnx import export_onnx
from edgegate.exporters.tensorrt import PLUGIN_OPS, for_tensorrt, with_fallbacks
from edgegate.exporters.tensorrt.onnx_model import PLUGIN_FIELDS
from edgegate.ops import gated_linear_attention


class GLA(nn.Module):
    def forward(self, q, k, v, g):
        return gated_linear_attention(q, k, v, g)[0]


def _gla_model(
    tmp_path, K: int = 4, V: int = 3, half: bool = False
) -> tuple[onnx.ModelProto, list]:
    args = [torch.randn(1, 5, 2, K), torch.randn(1, 5, 2, K), torch.randn(1, 5, 2, V),
            -torch.rand(1, 5, 2, K)]  # fmt: skip
    module = GLA()
    if half:
        args = [a.half() for a in args]
    path = export_onnx(module, tuple(args), tmp_path / f"gla{K}.onnx")
    return onnx.load(path), [list(a.shape) for a in args]


def test_plugin_functions_are_dropped_and_nodes_keep_their_attributes(tmp_path):
    model, shapes = _gla_model(tmp_path)
    assert any(f.name == "GatedLinearAttention" for f in model.functions)
    trt = for_tensorrt(model, shapes)
    assert not [f for f in trt.functions if f.name in PLUGIN_OPS]
    (node,) = [n for n in trt.graph.node if n.domain == "edgegate"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["plugin_namespace"] == b"edgegate" and attrs["plugin_version"] == b"1"
    assert attrs["scale"] == pytest.approx(4**-0.5)
    onnx.checker.check_model(trt, full_check=True)
    assert max(o.version for o in trt.opset_import if o.domain == "") <= 20


def test_head_dims_over_128_are_refused(tmp_path):
    model, shapes = _gla_model(tmp_path, K=130)
    with pytest.raises(BadInput, match="at most 128"):
        for_tensorrt(model, shapes)


def test_an_op_without_a_plugin_is_refused(tmp_path):
    model, shapes = _gla_model(tmp_path)
    node = next(n for n in model.graph.node if n.domain == "edgegate")
    node.op_type = "GatedMambaMixer"
    with pytest.raises(BadInput, match="GatedMambaMixer has no TensorRT plugin"):
        for_tensorrt(model, shapes)


def test_an_opset_newer_than_the_parser_is_refused(tmp_path):
    model, shapes = _gla_model(tmp_path)
    for entry in model.opset_import:
        if entry.domain == "":
            entry.version = 23
    with pytest.raises(BadInput, match="opset 23"):
        for_tensorrt(model, shapes)


def test_fp16_graphs_hand_the_plugin_an_fp32_state(tmp_path):
    model, shapes = _gla_model(tmp_path, half=True)
    trt = for_tensorrt(model, shapes, fp16=True)
    node = next(n for n in trt.graph.node if n.domain == "edgegate")
    producers = {out: n for n in trt.graph.node for out in n.output}
    consumers = {i: n for n in trt.graph.node for i in n.input}
    h0_cast, state_cast = producers[node.input[-1]], consumers[node.output[1]]
    assert h0_cast.op_type == "Cast" and h0_cast.attribute[0].i == onnx.TensorProto.FLOAT
    assert state_cast.op_type == "Cast" and state_cast.attribute[0].i == onnx.TensorProto.FLOAT16


def test_fallbacks_come_back_for_onnx_runtime(tmp_path):
    import numpy as np
    import onnxruntime as ort

    model, shapes = _gla_model(tmp_path)
    runnable = with_fallbacks(for_tensorrt(model, shapes))
    session = ort.InferenceSession(runnable.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = {i.name: np.random.default_rng(0).standard_normal(s).astype("float32")
            for i, s in zip(session.get_inputs(), shapes, strict=True)}  # fmt: skip
    feed[session.get_inputs()[3].name] = -np.abs(feed[session.get_inputs()[3].name])
    (out,) = session.run(None, feed)
    args = [torch.from_numpy(feed[i.name]) for i in session.get_inputs()]
    np.testing.assert_allclose(out, GLA()(*args).numpy(), atol=1e-5)


def test_plugin_fields_match_the_creators_in_the_cpp_source():
    """The manifest's field list is what the C++ creators register (scale on attention ops)."""
    source = (files("edgegate.csrc") / "tensorrt" / "src" / "plugins.cpp").read_text()
    table = dict(re.findall(r'OpInfo\{"(\w+)", \d+, (true|false)\}', source))
    assert set(table) == set(PLUGIN_OPS)
    for op, has_scale in table.items():
        assert PLUGIN_FIELDS[op] == (["scale"] if has_scale == "true" else []), op
    assert 'mFields.emplace_back("scale"' in source
