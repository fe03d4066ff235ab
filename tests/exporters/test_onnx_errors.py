"""Whose fault a failed ONNX export is: the model's (exit 2), torch.onnx's (exit 3) or
edgegate's (exit 70), by where it failed."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgegate.errors import BadInput, InternalError, ToolchainFailed
from edgegate.exporters.onnx import export_onnx
from edgegate.ops import gated_linear_scan


class Branchy(nn.Module):
    """The user's code branches on a tensor's values: torch.export cannot capture it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return x * 2
        return x


class Scan(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gated_linear_scan(x, -torch.ones_like(x))[0]


@torch.library.custom_op("egtest::twice", mutates_args=())
def _twice(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@_twice.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


class Untranslatable(nn.Module):
    """Captures fine; torch.onnx has no translation for the op."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.egtest.twice(x)


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


def test_a_graph_torch_onnx_cannot_translate_is_a_toolchain_failure(tmp_path):
    with pytest.raises(ToolchainFailed, match="torch.onnx") as info:
        export_onnx(Untranslatable(), (torch.randn(2, 3),), tmp_path / "m.onnx")
    assert info.value.exit_code == 3
