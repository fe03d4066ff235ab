"""ReduceMean over an NCHW tensor's two image axes is exported as GlobalAveragePool (the same
mean, which ONNX Runtime keeps in integers under Q/DQ; then a Reshape to [N, C] where the mean
drops those axes); every other ReduceMean stays."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from edgegate.exporters.onnx.export import export_onnx


class Pools(nn.Module):
    """The ways code spells a global average pool, and two means that are not one."""

    def __init__(self, keep_channel_mean: bool) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.keep_channel_mean = keep_channel_mean

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        pooled = (self.pool(x), x.mean((2, 3), keepdim=True), x.mean((-2, -1), keepdim=True))
        if self.keep_channel_mean:
            return (*pooled, x.mean(1, keepdim=True), x.mean((2, 3)))
        return pooled


def _ops(path) -> Counter:
    return Counter(n.op_type for n in onnx.load(path).graph.node)


@pytest.mark.parametrize("others", [False, True])
def test_image_means_become_global_pools_and_the_others_stay(tmp_path, others):
    module = Pools(others).eval()
    x = torch.randn(2, 5, 7, 9)
    path = export_onnx(module, (x,), tmp_path / "pools.onnx")
    ops = _ops(path)
    assert ops["GlobalAveragePool"] == (4 if others else 3)  # the mean without keepdim too
    assert ops["Reshape"] == (1 if others else 0)  # ... to [N, C]
    assert ops["ReduceMean"] == (1 if others else 0)  # the channel mean
    model = onnx.load(path)
    read = {name for n in model.graph.node for name in n.input}
    assert all(t.name in read for t in model.graph.initializer)  # no axes left behind
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x2 = torch.randn(3, 5, 11, 4)  # another batch and image size: nothing was specialised
    got = session.run(None, {session.get_inputs()[0].name: x2.numpy()})
    for want, have in zip(module(x2), got, strict=True):
        np.testing.assert_allclose(have, want.numpy(), rtol=1e-5, atol=1e-6)
