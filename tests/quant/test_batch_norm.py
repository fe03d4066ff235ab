"""BN folding for any conv -> BN pair: torch classes, subclasses, functional norm + act blocks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgegate.quant.batch_norm import fold_batch_norm, fold_sites
from edgegate.quant.graph import trace
from tests.recognise.lookalikes import BatchNormAct, PlainConv, lookalike_net


def _batch_norms(graph_module) -> list[str]:
    return [
        node.name
        for node in graph_module.graph.nodes
        if "batch_norm" in str(node.target)
        or isinstance(dict(graph_module.named_modules()).get(node.target), nn.BatchNorm2d)
    ]


@pytest.mark.parametrize("batch", [1, 3])
def test_module_and_functional_batch_norms_fold_and_compute_the_same(batch):
    model = lookalike_net()
    graph_module = trace(model)
    kinds = {site.bn.op for site in fold_sites(graph_module)}
    assert kinds == {"call_function"}  # every BN here runs inside a norm + act block
    assert fold_batch_norm(graph_module) == 9  # stem + two per block
    assert _batch_norms(graph_module) == []
    x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        torch.testing.assert_close(graph_module(x), model(x), rtol=1e-4, atol=1e-5)


def test_a_torch_batch_norm_after_a_conv_subclass_folds():
    model = nn.Sequential(PlainConv(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    model[1].running_var.fill_(4.0)
    graph_module = trace(model)
    assert [site.bn.op for site in fold_sites(graph_module)] == ["call_module"]
    assert fold_batch_norm(graph_module) == 1
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(graph_module(x), model(x), rtol=1e-4, atol=1e-5)


class _SharedConv(nn.Module):
    """The conv feeds the BN and a skip: folding would change the skip."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.bn(y) + y


class _PaddedConv(nn.Conv2d):
    """A subclass with its own forward (pads first): not torch's conv, so not folded into."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (1, 1, 1, 1)), self.weight, self.bias)


class _TrainingNorm(BatchNormAct):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, training=True)


@pytest.mark.parametrize(
    "model",
    [
        _SharedConv(),
        nn.Sequential(_PaddedConv(3, 3, 3), nn.BatchNorm2d(3)),
        nn.Sequential(nn.Conv2d(3, 3, 1), _TrainingNorm(3)),
    ],
    ids=["conv-with-two-users", "conv-subclass-with-own-forward", "batch-statistics"],
)
def test_pairs_that_would_change_the_result_are_not_folded(model):
    graph_module = trace(model.eval())
    assert fold_batch_norm(graph_module) == 0
