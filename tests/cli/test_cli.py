"""The CLI contract: commands listed, exit codes, one-line errors, JSON output."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from tests.conftest import assert_one_line_error

COMMANDS = ("models", "train", "evaluate", "export", "quantize", "validate", "bench", "deploy")


def test_help_lists_every_command(run_cli):
    result = run_cli("--help")
    assert result.code == 0
    for command in COMMANDS:
        assert command in result.stdout


def test_version(run_cli):
    result = run_cli("--version")
    assert result.code == 0 and result.stdout.startswith("edgegate ")


def test_models_json_lists_the_zoo_with_costs(run_cli):
    result = run_cli("models", "--json")
    assert result.code == 0, result.stderr
    rows = {row["name"]: row for row in result.json()}
    for name in ("mobilenet-v3-se", "gc-mobilenet", "qvit", "qlm", "gla-lm", "hgrn-lm", "gdn-lm"):
        assert rows[name]["params"] > 0
        assert rows[name]["macs"] > 0


def test_models_table(run_cli):
    result = run_cli("models")
    assert result.code == 0
    assert "gc-mobilenet" in result.stdout


def test_unknown_model_name(run_cli):
    assert_one_line_error(run_cli("evaluate", "resnet-9000"), "resnet-9000")


@pytest.mark.parametrize("spec", ["qvit:attention", "qvit:=gated", "qvit:attention=banana"])
def test_malformed_model_spec(run_cli, spec):
    assert_one_line_error(run_cli("evaluate", spec), "qvit")


def test_missing_checkpoint(run_cli, tmp_path):
    missing = tmp_path / "nope.pt"
    assert_one_line_error(run_cli("evaluate", "mobilenet-v3-se", "-c", missing), "nope.pt")


def test_corrupt_checkpoint(run_cli, tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00not a checkpoint" * 10)
    assert_one_line_error(run_cli("evaluate", "mobilenet-v3-se", "-c", corrupt), "corrupt.pt")


def test_checkpoint_for_another_model(run_cli, tmp_path):
    from edgegate.models import build_model, save_checkpoint

    ckpt = tmp_path / "qvit.pt"
    save_checkpoint(ckpt, build_model("qvit"), "qvit")
    assert_one_line_error(run_cli("evaluate", "mobilenet-v3-se", "-c", ckpt), "qvit.pt")


def test_full_pickle_needs_trust_code(run_cli, tmp_path):
    pickled = tmp_path / "pickled.pt"
    torch.save({"module": torch.nn.Linear(2, 2)}, pickled)
    assert_one_line_error(run_cli("evaluate", "mobilenet-v3-se", "-c", pickled), "--trust-code")


def test_factory_spec_needs_trust_code(run_cli):
    assert_one_line_error(run_cli("evaluate", "json.decoder:JSONDecoder"), "--trust-code")


def test_bad_data_source(run_cli, tmp_path):
    assert_one_line_error(
        run_cli("evaluate", "mobilenet-v3-se", "--data", tmp_path / "missing.npz"), "missing.npz"
    )


def test_train_gc_mobilenet_end_to_end(run_cli, tmp_path):
    """A tiny real run: one capped epoch, then the checkpoint evaluates to what it recorded."""
    ckpt = tmp_path / "gc.pt"
    result = run_cli(
        "train", "gc-mobilenet", "--epochs", "1", "--max-steps", "3", "--batch-size", "32",
        "-o", ckpt, "--json",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    summary = result.json()
    assert ckpt.exists()
    assert {"top1", "stop_rate_negatives", "pass_rate_positives", "compression_ratio"} <= set(
        summary["metrics"]
    )
    again = run_cli("evaluate", "gc-mobilenet", "-c", ckpt, "--json")
    assert again.code == 0, again.stderr
    assert again.json()["metrics"]["top1"] == pytest.approx(summary["metrics"]["top1"])
    recorded = torch.load(ckpt, weights_only=True)
    assert recorded["extra"]["command"].startswith("edgegate train gc-mobilenet")


def test_train_half_records_the_metrics_of_the_stored_weights(run_cli, tmp_path):
    ckpt = tmp_path / "half.pt"
    result = run_cli(
        "train", "mobilenet-v3-se:width=0.25", "--epochs", "1", "--max-steps", "2",
        "--half", "-o", ckpt, "--json",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    assert result.json()["stored_as"] == "float16"
    stored = torch.load(ckpt, weights_only=True)["state_dict"]
    assert all(v.dtype == torch.float16 for v in stored.values() if v.is_floating_point())
    again = run_cli("evaluate", "mobilenet-v3-se:width=0.25", "-c", ckpt, "--json")
    assert again.code == 0, again.stderr
    assert again.json()["metrics"]["top1"] == result.json()["metrics"]["top1"]


def test_train_refuses_a_directory_output(run_cli, tmp_path):
    assert_one_line_error(run_cli("train", "mobilenet-v3-se", "-o", tmp_path), "directory")


def test_console_script_one_line_no_traceback():
    """The installed entry point, end to end in a fresh process."""
    proc = subprocess.run(
        [sys.executable, "-m", "edgegate", "evaluate", "no-such-model"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_single_module_factory_exports_and_validates_with_its_stored_weights(
    run_cli, tmp_path, monkeypatch
):
    """`tinycls:build` from the working folder: its random weights are stored in the export,
    so `validate` rebuilds the same model (a fresh factory call would draw other weights)."""
    (tmp_path / "tinycls.py").write_text(
        "import torch\nfrom torch import nn\n\n"
        "def build():\n"
        "    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(),\n"
        "                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))\n"
    )
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    exported = run_cli(
        "export", "tinycls:build", "--trust-code", "--task", "image", "-o", out, "--json"
    )
    assert exported.code == 0, exported.stderr
    assert exported.json()["weights"].startswith("user model")
    verdict = run_cli("validate", out, "--trust-code", "--parity-samples", "32", "--json")
    assert verdict.code == 0, verdict.stderr
    assert verdict.json()["outputs"]["logits"]["max_abs"] < 1e-4
