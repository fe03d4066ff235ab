"""Whose fault a failed ONNX export is: the model's (exit 2) or edgegate's (exit 70), by where
it failed. (torch.onnx failing to translate standard ops, exit 3, has no known trigger to
test without patching torch itself.)"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgegate.errors import BadInput, InternalError
from edgegate.exporters.onnx import export_onnx
from edgegate.ops import gated_linear_scan
from tests.targets import custom_op_model


class Branchy(nn.Module):
    """The user's code branches on a tensor's values: torch.export cannot capture it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return x * 2
        return x


class Scan(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gated_linear_scan(x, -torch.ones_like(x))[0]


def test_the_users_untraceable_code_is_bad_input(tmp_path):
    with pytest.raises(BadInput, match="Branchy"):
        export_onnx(Branchy(), (torch.randn(2, 3),), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_edgegate_code_failing_inside_the_export_is_internal(tmp_path, monkeypatch):
    """An observer list corrupted in edgegate's op layer: the TypeError rises in edgegate's
    code while torch.export traces the user's model, so it is edgegate's bug (exit 70)."""
    monkeypatch.setattr("edgegate.ops.api._observers", [None])
    with pytest.raises(InternalError, match="edgegate's code") as info:
        export_onnx(Scan(), (torch.randn(1, 4, 2, 3),), tmp_path / "m.onnx")
    assert info.value.exit_code == 70


def test_the_users_own_op_without_an_onnx_form_is_bad_input(tmp_path):
    """The user's op captures fine, but torch.onnx has no translation for it: their model."""
    model = custom_op_model.build()
    with pytest.raises(BadInput, match="WithMystery uses an op torch.onnx cannot translate"):
        export_onnx(model, (torch.randn(1, 3, 8, 8),), tmp_path / "m.onnx")
