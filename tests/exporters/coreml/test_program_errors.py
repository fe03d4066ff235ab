"""A failure in edgegate's own Core ML preparation is internal (exit 70), never the input's."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgegate.errors import InternalError
from edgegate.exporters.coreml.program import export_program


def _broken(*args, **kwargs):
    raise RuntimeError("a decomposition edgegate ships raised")


def test_a_failing_decomposition_of_edgegates_ops_is_internal(monkeypatch):
    monkeypatch.setattr("edgegate.exporters.coreml.program.decompose", _broken)
    with pytest.raises(InternalError, match="decomposing edgegate's ops") as info:
        export_program(nn.Linear(3, 2), (torch.randn(2, 3),), [], 1)
    assert info.value.exit_code == 70
