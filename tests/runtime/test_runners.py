"""Runners: torch vs onnxruntime agree; bad feeds are one-line BadInput; GC two-stage stops."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from torch import nn

from edgegate.errors import BackendUnavailable, BadInput
from edgegate.exporters.onnx import export_onnx
from edgegate.runtime import (
    CoreMLRunner,
    OnnxRuntimeRunner,
    TensorRTRunner,
    TorchRunner,
    TwoStageRunner,
)


class Stage1(nn.Module):
    """gate_prob = sigmoid(first feature); features = 2x."""

    def forward(self, x):
        return torch.sigmoid(x[:, 0]), 2 * x


class Stage2(nn.Module):
    def forward(self, z):
        return z[:, :3] + 1


@pytest.fixture(scope="module")
def mlp_onnx(tmp_path_factory):
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    path = tmp_path_factory.mktemp("mlp") / "mlp.onnx"
    export_onnx(module, (torch.randn(2, 4),), path, input_names=["x"], output_names=["y"])
    return module, path


def test_torch_and_onnxruntime_runners_agree(mlp_onnx):
    module, path = mlp_onnx
    feed = {"x": np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)}
    with TorchRunner(module, ["x"], ["y"]) as ref, OnnxRuntimeRunner(path, threads=1) as cand:
        np.testing.assert_allclose(cand.run(feed)["y"], ref.run(feed)["y"], atol=1e-5)
        assert cand.last_latency_ms > 0 and ref.last_latency_ms > 0
        assert cand.input_specs()[0].name == "x"


@pytest.mark.parametrize(
    "feed,fragment",
    [
        ({"x": np.zeros((2, 5), np.float32)}, "mlp.onnx"),
        ({"x": np.zeros((2, 4), np.float64)}, "float32"),
        ({"x": np.zeros((2, 4, 1), np.float32)}, "shape"),
        ({}, "needs input"),
        ({"x": np.zeros((2, 4), np.float32), "z": np.zeros(1)}, "no input"),
    ],
)
def test_bad_feed_is_one_line_bad_input(mlp_onnx, feed, fragment):
    with OnnxRuntimeRunner(mlp_onnx[1]) as runner, pytest.raises(BadInput, match=fragment) as info:
        runner.run(feed)
    assert "\n" not in str(info.value)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(BadInput, match="does not exist"), OnnxRuntimeRunner(tmp_path / "no.onnx"):
        pass
    corrupt = tmp_path / "bad.onnx"
    corrupt.write_bytes(b"not onnx at all")
    with pytest.raises(BadInput, match="bad.onnx"), OnnxRuntimeRunner(corrupt):
        pass


def test_two_stage_runs_stage2_only_past_the_gate():
    x = np.array([[3, 1, 1, 1], [-3, 1, 1, 1], [0.5, 2, 2, 2]], dtype=np.float32)
    stage2 = TorchRunner(Stage2(), ["features"], ["logits"])
    calls = []
    original = stage2._infer
    stage2._infer = lambda feed: calls.append(len(feed["features"])) or original(feed)
    with TwoStageRunner(
        TorchRunner(Stage1(), ["x"], ["gate_prob", "features"]), stage2, threshold=0.5
    ) as runner:
        out = runner.run({"x": x})
    assert out["passed"].tolist() == [True, False, True]
    assert calls == [2]
    assert np.isnan(out["logits"][1]).all()
    np.testing.assert_allclose(out["logits"][0], 2 * x[0, :3] + 1)


def test_idle_between_runs_turns_off_onnxruntime_spinning(mlp_onnx, monkeypatch):
    """An always-on stage's ORT session lets its pool threads sleep between calls; a plain
    session keeps ORT's spinning default. Checked on the options ORT is actually handed."""
    import onnxruntime

    _, path = mlp_onnx
    seen = []
    real = onnxruntime.InferenceSession

    def recording(model, options, **kwargs):
        try:
            seen.append(options.get_session_config_entry("session.intra_op.allow_spinning"))
        except Exception:  # ORT raises for an entry never set
            seen.append(None)
        return real(model, options, **kwargs)

    monkeypatch.setattr(onnxruntime, "InferenceSession", recording)
    with OnnxRuntimeRunner(path, threads=2):
        pass
    stage1, stage2 = OnnxRuntimeRunner(path, threads=1), OnnxRuntimeRunner(path, threads=2)
    with TwoStageRunner(stage1, stage2):
        pass
    assert seen == [None, "0", "0"]


def test_unavailable_backends_exit_3(tmp_path):
    with pytest.raises(BackendUnavailable) as info:
        TensorRTRunner("model")
    assert info.value.exit_code == 3
    if sys.platform != "darwin":  # Core ML's own predict: macOS only (emulation elsewhere)
        package = tmp_path / "model.mlpackage"
        package.mkdir()
        with pytest.raises(BackendUnavailable) as info:
            CoreMLRunner(package, emulate=False)
        assert info.value.exit_code == 3
