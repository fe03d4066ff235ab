"""`quantize hf:...`: transformers' LMs (which FX cannot trace) are captured by torch.export,
their recurrences swapped, and the report names the recurrence and the gates."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_qwen3_next_quantizes_and_reports_its_gdn_and_output_gate(
    run_cli, qwen3_next_dir, small_text, tmp_path
):
    out = tmp_path / "int8"
    result = run_cli(
        "quantize", f"hf:{qwen3_next_dir}", "--seq-len", "32", "--data", small_text,
        "--calib-data", small_text, "--calib-samples", "16", "--max-drop", "3", "-o", out,
        "--json",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    summary = result.json()
    assert summary["passed"], summary["failures"]
    [swapped] = summary["recurrences"]["swapped"]
    assert swapped["op"] == "GatedDeltaRule" and summary["recurrences"]["traced"] == []
    gates = {(g["path"], g["family"]) for g in summary["gates"]["recognised"]}
    assert ("model.model.layers.1.self_attn", "elementwise_gate") in gates  # the output gate
    assert ("model.model.layers.1.self_attn", "attention_softmax") in gates
    assert not any("mlp.gate" in w for w in summary["warnings"])  # routers are not gates
    report = json.loads((out / "report.json").read_text())
    assert report["recurrences"]["swapped"][0]["path"] == "model.model.layers.0.linear_attn"


@pytest.mark.slow
def test_qwen3_next_quantizes_for_executorch(run_cli, qwen3_next_dir, small_text, tmp_path):
    """PT2E for XNNPACK: the integer position ids stay integer through calibration (they were
    turned float: exit 70), and the Gated DeltaNet's output norm stays float."""
    result = run_cli(
        "quantize", f"hf:{qwen3_next_dir}", "-p", "executorch", "--seq-len", "32",
        "--data", small_text, "--calib-data", small_text, "--calib-samples", "16",
        "--max-drop", "3", "-o", tmp_path / "int8", "--json",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    summary = result.json()
    assert summary["passed"], summary["failures"]
    assert summary["recurrences"]["swapped"][0]["op"] == "GatedDeltaRule"
