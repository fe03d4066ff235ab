"""`hf:` models through export and validate: recognised recurrences become one edgegate op
each, batch and length stay dynamic, and an unrecognised recurrence is reported as traced."""

from __future__ import annotations

import json
from collections import Counter

import onnx
import pytest

SEQ = "32"  # traced length: the declared ranges reach 2x, past the GDN's 64-token chunks


def _export(run_cli, folder, target, out, *extra):
    result = run_cli(
        "export", f"hf:{folder}", "--target", target, "--seq-len", SEQ, "-o", out, "--json", *extra
    )
    assert result.code == 0, result.stderr
    return result.json()


def _validate(run_cli, out, text):
    result = run_cli("validate", out, "--data", text, "--json")
    assert result.code == 0, result.stderr
    return result.json()


def _ops(path) -> Counter:
    return Counter(node.op_type for node in onnx.load(path).graph.node)


def test_qwen3_next_onnx_has_one_delta_rule_and_validates_over_its_ranges(
    run_cli, qwen3_next_dir, small_text, tmp_path
):
    out = tmp_path / "onnx"
    exported = _export(run_cli, qwen3_next_dir, "onnx", out)
    [swapped] = exported["recurrences"]["swapped"]
    assert swapped["path"] == "model.model.layers.0.linear_attn"
    assert swapped["op"] == "GatedDeltaRule" and exported["recurrences"]["traced"] == []
    ops = _ops(out / "model.onnx")
    assert ops["GatedDeltaRule"] == 1 and ops["Loop"] == 0 and ops["ScatterND"] == 0
    assert sum(ops.values()) < 600  # transformers' chunk loop unrolled to about 1,658 nodes
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["extra"]["recurrences"]["swapped"][0]["op"] == "GatedDeltaRule"
    ranges = {r["name"]: r for r in manifest["ranges"]["model"]["ranges"]}
    assert ranges["batch"]["max"] >= 2 and ranges["seq_len"]["max"] >= 2 * int(SEQ)
    report = _validate(run_cli, out, small_text)
    assert report["passed"] and report["ranges"], report["failures"]


def test_mamba2_onnxruntime_exports_and_validates(run_cli, mamba2_dir, small_text, tmp_path):
    out = tmp_path / "ort"
    exported = _export(run_cli, mamba2_dir, "onnxruntime", out)
    assert [s["op"] for s in exported["recurrences"]["swapped"]] == ["GatedLinearAttention"] * 2
    assert not any(f["name"] in ("batch", "seq_len") for f in _fixed(exported))
    assert _validate(run_cli, out, small_text)["passed"]


def _fixed(exported) -> list[dict]:
    return [f for record in exported["ranges"].values() for f in record["fixed"]]


def test_an_unrecognised_recurrence_is_reported_as_traced_and_its_range_is_honest(
    run_cli, mamba_dir, small_text, tmp_path
):
    out = tmp_path / "mamba"
    exported = _export(run_cli, mamba_dir, "onnx", out)
    assert exported["recurrences"]["swapped"] == []
    traced = exported["recurrences"]["traced"]
    assert traced and all("no recogniser" in t["reason"] for t in traced)
    # whatever was declared is what validate checks: a fixed dim is recorded with its reason
    assert _validate(run_cli, out, small_text)["passed"]


@pytest.mark.slow
@pytest.mark.parametrize("target", ["onnxruntime", "tensorrt"])
@pytest.mark.parametrize("model", ["qwen3_next", "recurrent_gemma"])
def test_every_onnx_target_validates(run_cli, request, small_text, tmp_path, target, model):
    folder = request.getfixturevalue(f"{model}_dir")
    out = tmp_path / f"{model}-{target}"
    exported = _export(run_cli, folder, target, out)
    assert exported["recurrences"]["swapped"] and not exported["recurrences"]["traced"]
    assert not any(f["name"] in ("batch", "seq_len") for f in _fixed(exported))
    assert _validate(run_cli, out, small_text)["passed"]
