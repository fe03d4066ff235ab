"""ExecuTorch export failures: the lowering's are the toolchain's (exit 3, its message),
torch.export refusing the model's code stays the input's (exit 2)."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

from edgegate.errors import BadInput, ToolchainFailed

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("executorch") is None, reason="ExecuTorch not installed"
)


class Branchy(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 if x.sum() > 0 else x


def _lowering_fails(*args, **kwargs):
    raise RuntimeError("XNNPACK partitioner: unsupported node")


def _export(module: nn.Module, tmp_path):
    from edgegate.exporters.executorch.export import export_pte

    return export_pte(
        module, (torch.randn(2, 3),), tmp_path / "m.pte", input_names=["x"],
        output_names=["y"], dynamic_dims=[[0]],
    )  # fmt: skip


def test_a_lowering_failure_is_the_toolchains(tmp_path, monkeypatch):
    monkeypatch.setattr("edgegate.exporters.executorch.export._lower", _lowering_fails)
    with pytest.raises(ToolchainFailed, match="ExecuTorch.*unsupported node") as info:
        _export(nn.Linear(3, 2), tmp_path)
    assert info.value.exit_code == 3
    assert not (tmp_path / "m.pte").exists()


def test_the_models_untraceable_code_stays_bad_input(tmp_path):
    with pytest.raises(BadInput, match="torch.export failed"):
        _export(Branchy(), tmp_path)
