"""FX tracing for graph-mode quantization: the model's untraceable code is bad input (and
callers fall back to torch.export on it); a failure of edgegate's tracer is internal."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgegate.errors import BadInput, InternalError
from edgegate.quant.graph import trace


class Branchy(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 if x.sum() > 0 else x


def test_the_models_data_dependent_branch_is_bad_input():
    with pytest.raises(BadInput, match="Branchy"):
        trace(Branchy())


def test_a_failure_in_edgegates_tracer_is_internal(monkeypatch):
    monkeypatch.setattr("edgegate.quant.graph.LEAF_TYPES", ("not a type",))
    with pytest.raises(InternalError, match="tracer") as info:
        trace(nn.Sequential(nn.Linear(3, 2)))
    assert info.value.exit_code == 70
