"""W4 layers in ONNX: MatMulNBits and block-DequantizeLinear exports hold exactly W4Linear's
codes and compute what the fake-quant model computes, in ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from edgegate.exporters.onnx import export_onnx
from edgegate.exporters.onnx.weight_only import WeightOnlyForm
from edgegate.quant.weight_only import W4Linear, W8Linear
from edgegate.quant.weight_only_export import exportable_w4
from edgegate.runtime import OnnxRuntimeRunner


def _model(symmetric: bool, seed: int, kept: bool = True) -> nn.Module:
    """Two W4 layers (one without bias) and, with ``kept``, an int8 weight-only one."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 48), nn.GELU(), nn.Linear(48, 32, bias=False))
    model[0] = W4Linear.from_linear(model[0], 16, symmetric)
    model[2] = W4Linear.from_linear(model[2], 16, symmetric)
    if kept:
        model.append(W8Linear.from_linear(nn.Linear(32, 8)))
    return model.eval()


def _export(model: nn.Module, form: WeightOnlyForm, path) -> onnx.ModelProto:
    x = torch.randn(2, 5, 64)
    export_onnx(
        exportable_w4(model), (x,), path, input_names=["x"], output_names=["y"],
        weight_only=form,
    )  # fmt: skip
    return onnx.load(path)


def _run(path, x: np.ndarray, fuse_qdq: bool) -> np.ndarray:
    """``fuse_qdq=False``: Q/DQ as written (ORT would otherwise fuse DequantizeLinear + MatMul
    into its own MatMulNBits, at its default int8 accuracy level)."""
    with OnnxRuntimeRunner(path, threads=1, fuse_qdq=fuse_qdq) as runner:
        return runner.run({"x": x})["y"]


def _unpack(packed: np.ndarray) -> np.ndarray:
    low, high = packed & 0x0F, packed >> 4
    return np.stack([low, high], -1).reshape(*packed.shape[:-1], -1).astype(np.int16)


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("accuracy_level", [0, 1, 4])
def test_matmulnbits_codes_and_outputs(tmp_path, symmetric, accuracy_level):
    model = _model(symmetric, seed=1, kept=False)
    path = tmp_path / "m.onnx"
    graph = _export(model, WeightOnlyForm("matmulnbits", accuracy_level), path).graph
    nodes = [n for n in graph.node if n.op_type == "MatMulNBits"]
    assert len(nodes) == 2 and not [n for n in graph.node if n.domain == "edgegate"]
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node, layer in zip(nodes, (model[0], model[2]), strict=True):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert (attrs["K"], attrs["N"], attrs["bits"], attrs["block_size"]) == (
            layer.in_features, layer.out_features, 4, 16,
        )  # fmt: skip
        assert attrs["accuracy_level"] == accuracy_level
        stored = _unpack(inits[node.input[1]]).reshape(layer.out_features, -1)
        expected = layer.codes.numpy().astype(np.int16) + (8 if symmetric else 0)
        np.testing.assert_array_equal(stored, expected)
        scales = inits[node.input[2]].reshape(layer.scales.shape)
        np.testing.assert_array_equal(scales, layer.scales.numpy())
        if not symmetric:
            zps = _unpack(inits[node.input[3]]).reshape(layer.out_features, -1)
            np.testing.assert_array_equal(zps[:, : layer.scales.shape[1]], layer.zero_points)
    x = torch.randn(3, 7, 64)
    want = model(x).detach().numpy()
    got = _run(path, x.numpy(), fuse_qdq=True)
    # level 4 quantizes the activations to int8 inside the kernel: a few int8 steps
    tol = 1e-5 if accuracy_level in (0, 1) else 0.05
    assert np.abs(got - want).max() <= tol * max(1.0, np.abs(want).max())


@pytest.mark.parametrize("symmetric", [True, False])
def test_block_dequantize_codes_and_outputs(tmp_path, symmetric):
    model = _model(symmetric, seed=2)
    path = tmp_path / "m.onnx"
    proto = _export(model, WeightOnlyForm("blockdq"), path)
    opset = next(o.version for o in proto.opset_import if o.domain == "")
    assert opset == 21
    dqs = [n for n in proto.graph.node if n.op_type == "DequantizeLinear"]
    inits = {i.name: i for i in proto.graph.initializer}
    four_bit = (onnx.TensorProto.INT4, onnx.TensorProto.UINT4)
    int4 = [n for n in dqs if inits[n.input[0]].data_type in four_bit]
    assert len(int4) == 2 and len(dqs) == 3
    for node, layer in zip(int4, (model[0], model[2]), strict=True):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs == {"axis": 0, "block_size": 16}
        codes = numpy_helper.to_array(inits[node.input[0]]).astype(np.int16)
        np.testing.assert_array_equal(codes.T, layer.codes.numpy())
    [int8] = [n for n in dqs if n not in int4]
    kept = numpy_helper.to_array(inits[int8.input[0]])
    np.testing.assert_array_equal(kept.T, model[3].codes.numpy())
    x = torch.randn(3, 7, 64)
    want = model(x).detach().numpy()
    np.testing.assert_allclose(_run(path, x.numpy(), fuse_qdq=False), want, rtol=1e-5, atol=1e-5)
