"""A user's `.pt2` (torch.export program) through `edgegate quantize` and `edgegate export` to
every target: INT8 under the onnxruntime profile, and each target's file run here against the
program (Core ML in its numpy emulation; its own predict needs macOS)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from edgegate.manifest import read_manifest
from edgegate.models import load_model
from edgegate.targets import get_target

TARGETS = ("onnx", "onnxruntime", "tensorrt", "coreml", "executorch")
CALIB = ["--calib-samples", "32"]


class SECNN(nn.Module):
    """conv-BN-ReLU, a stride-2 conv-BN-ReLU, a sigmoid SE gate, a pooled Linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.se_reduce = nn.Conv2d(16, 4, 1)
        self.se_expand = nn.Conv2d(4, 16, 1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        gate = torch.sigmoid(self.se_expand(torch.relu(self.se_reduce(x.mean((2, 3), True)))))
        return self.fc((x * gate).mean((2, 3)))


@pytest.fixture(scope="module")
def cnn_pt2(tmp_path_factory) -> Path:
    """The CNN saved as a user would: batch bounded at 64 (below the 256 rows edgegate scores
    at once), image sides free."""
    torch.manual_seed(0)
    model = SECNN().eval()
    for bn in (model.bn1, model.bn2):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    auto = torch.export.Dim.AUTO
    shapes = ({0: torch.export.Dim("batch", min=1, max=64), 2: auto, 3: auto},)
    program = torch.export.export(model, (torch.randn(2, 3, 32, 32),), dynamic_shapes=shapes)
    path = tmp_path_factory.mktemp("pt2") / "secnn.pt2"
    torch.export.save(program, path)
    return path


def _program_outputs(path: Path, images: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return load_model(str(path)).module(torch.from_numpy(images)).numpy()


def test_quantize_pt2_onnxruntime_passes_without_batch_norm(run_cli, tmp_path, cnn_pt2):
    out = tmp_path / "int8"
    result = run_cli("quantize", cnn_pt2, "--task", "image", "-p", "onnxruntime", *CALIB,
                     "--report", "-o", out, "--json")  # fmt: skip
    assert result.code == 0, result.stderr
    report = result.json()
    assert report["passed"] and report["failures"] == []
    assert report["onnx_vs_fake_quant"]["top1_agreement"] >= 99.0, report["onnx_vs_fake_quant"]
    assert report["accuracy"]["float"]["samples"] > 64  # scored past the program's batch bound
    graph = onnx.load(out / "model.int8.onnx").graph
    ops = [node.op_type for node in graph.node]
    assert "BatchNormalization" not in ops  # folded into the convs before quantization
    assert ops.count("Conv") == 4 and ops.count("QuantizeLinear") >= 5
    assert read_manifest(out).precision == "int8"
    # the SE gate is recognised in the program's aten graph, under the path it was traced in
    gates = report["gates"]["recognised"]
    assert [(g["path"], g["family"]) for g in gates] == [("", "squeeze_excitation")]
    assert gates[0]["flip_rate"] is not None
    # the per-layer report names the program's layers after the modules that held the weights
    assert report["report_layers"] == 5
    assert "`se_expand` | Conv2d" in (out / "quant_report.md").read_text()
    # validate rebuilds the fake-quant model from the program and the saved state, and feeds
    # it within the program's batch bound (256 parity rows, batch at most 64)
    verdict = run_cli("validate", out, "--json")
    assert verdict.code == 0, verdict.stderr
    assert verdict.json()["top1_agreement"] >= 99.5


@pytest.mark.parametrize("target", TARGETS)
def test_export_pt2_to_every_target_runs_like_the_program(run_cli, tmp_path, cnn_pt2, target):
    out = tmp_path / target
    result = run_cli("export", cnn_pt2, "--task", "image", "--target", target, "-o", out)
    assert result.code == 0, result.stderr
    manifest = read_manifest(out)
    model_file = out / manifest.extra["model_file"]
    assert model_file.exists()
    if target == "tensorrt":  # a kit: built on the device; no plugin for a plain CNN
        assert {"build.sh", "compare.py", "model.onnx"} <= {p.name for p in out.iterdir()}
        assert not (out / "plugin").exists()
    if target == "coreml":
        from edgegate.exporters.coreml.inspect import load

        load(model_file)  # coremltools reads the converted package on Linux
    images = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    with get_target(target).runner(model_file, threads=2) as runner:  # Core ML: emulated
        got = runner.run({"images": images})["logits"]
    np.testing.assert_allclose(got, _program_outputs(cnn_pt2, images), rtol=2e-2, atol=2e-2)


@pytest.mark.skipif(importlib.util.find_spec("coremltools") is None, reason="no coremltools")
def test_coreml_predict_of_a_pt2_package(run_cli, tmp_path, cnn_pt2):
    if sys.platform != "darwin":
        pytest.skip("Core ML predict needs macOS")
    from edgegate.runtime import CoreMLRunner

    out = tmp_path / "coreml"
    assert run_cli("export", cnn_pt2, "--task", "image", "-t", "coreml", "-o", out).code == 0
    images = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)
    with CoreMLRunner(out / "model.mlpackage", emulate=False) as runner:
        got = runner.run({"images": images})["logits"]
    np.testing.assert_allclose(got, _program_outputs(cnn_pt2, images), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("target", ["tensorrt", "coreml", "executorch"])
def test_export_int8_pt2(run_cli, tmp_path, cnn_pt2, target):
    """INT8 under each target's own profile (ExecuTorch: PT2E, whose lowering needs the
    program's linears as nn.Linear)."""
    out = tmp_path / target
    result = run_cli("export", cnn_pt2, "--task", "image", "--target", target, "--int8", *CALIB,
                     "-o", out, "--json")  # fmt: skip
    assert result.code == 0, result.stderr
    report = result.json()
    assert report["passed"], report["failures"]
    assert report["onnx_vs_fake_quant"]["top1_agreement"] >= 99.0


@pytest.mark.slow
def test_quantize_lm_pt2(run_cli, tmp_path):
    """An LM-style program (int64 tokens [B, T] -> logits) with a sigmoid-gated projection."""

    class GatedLM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(256, 16)
            self.gate = nn.Linear(16, 16)
            self.value = nn.Linear(16, 16)
            self.head = nn.Linear(16, 256)

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            h = self.embed(tokens)
            return self.head(h + self.value(h) * torch.sigmoid(self.gate(h)))

    torch.manual_seed(0)
    path = tmp_path / "lm.pt2"
    dims = ({0: torch.export.Dim("batch", max=64), 1: torch.export.Dim("seq", max=256)},)
    tokens = torch.randint(0, 256, (2, 32))
    torch.export.save(torch.export.export(GatedLM().eval(), (tokens,), dynamic_shapes=dims), path)
    out = tmp_path / "int8"
    result = run_cli("quantize", path, "--task", "lm", "--seq-len", "32", "--calib-samples", "8",
                     "-o", out, "--json")  # fmt: skip
    assert result.code == 0, result.stderr
    assert result.json()["passed"]


def test_a_program_bounded_at_batch_4_is_fed_and_declared_within_it(run_cli, tmp_path):
    """Scoring (256 rows), calibration (16) and QAT (64) run in pieces of at most 4 rows, and
    the exports declare no batch beyond 4."""
    torch.manual_seed(0)
    shapes = ({0: torch.export.Dim("batch", min=1, max=4)},)
    program = torch.export.export(
        SECNN().eval(), (torch.randn(2, 3, 32, 32),), dynamic_shapes=shapes
    )
    path = tmp_path / "b4.pt2"
    torch.export.save(program, path)
    out = tmp_path / "float"
    assert run_cli("export", path, "--task", "image", "-t", "onnxruntime", "-o", out).code == 0
    (batch,) = [r for r in read_manifest(out).ranges["model"]["ranges"] if r["name"] == "batch"]
    assert (batch["min"], batch["max"]) == (1, 4)
    int8 = tmp_path / "int8"
    result = run_cli("quantize", path, "--task", "image", *CALIB, "--qat-epochs", "1",
                     "-o", int8, "--json")  # fmt: skip
    assert result.code == 0, result.stderr
    assert result.json()["ranges"]["model.int8"]["ranges"][0]["max"] == 4
