"""`quantize --scheme w4` end to end on the shipped gla-lm, one export per target: the file
carries INT4 weights (<= 0.3x the fp32 export's bytes), runs in its runtime (Core ML: in
edgegate's emulation), matches the W4 fake-quant model and keeps perplexity within +3 %."""

from __future__ import annotations

import json

import pytest

from edgegate.pipeline.quantize import disk_bytes, quantize


@pytest.mark.slow
@pytest.mark.parametrize(
    ("profile", "form"),
    [
        ("onnxruntime", "matmulnbits"),
        ("tensorrt", "blockdq"),
        ("executorch", "8da4w"),
        ("coreml", "int4-blockwise"),
    ],
)
def test_w4_export_per_target(tmp_path, profile, form):
    out = tmp_path / profile
    result = quantize("gla-lm", out, profile=profile, scheme="w4", calib_samples=32)
    assert result["passed"], result["failures"]
    assert result["quant"]["scheme"] == "w4" and result["quant"]["form"] == form
    assert result["sizes"]["ratio"] <= 0.3
    float_ppl = result["accuracy"]["float"]["perplexity"]
    assert result["perplexity_increase"] <= 0.03 * float_ppl + 1e-9
    kept = {k["layer"] for k in result["quant"]["kept"]}
    assert kept and all("g_proj" in k or "gk_proj" in k for k in kept)  # gates stay int8
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["quant"]["scheme"] == "w4"


@pytest.mark.slow
def test_w4_streaming_executorch(tmp_path):
    """The decode step (tokens and states in and out) as an 8da4w program."""
    result = quantize(
        "gla-lm", tmp_path / "s", profile="executorch", scheme="w4", streaming=True,
        calib_samples=16,
    )  # fmt: skip
    assert result["passed"], result["failures"]
    assert result["streaming"]["state_inputs"]


def test_disk_bytes_sums_a_package_folder(tmp_path):
    (tmp_path / "m.mlpackage" / "Data").mkdir(parents=True)
    (tmp_path / "m.mlpackage" / "Data" / "weights.bin").write_bytes(b"x" * 1000)
    (tmp_path / "m.mlpackage" / "Manifest.json").write_bytes(b"{}")
    (tmp_path / "model.onnx").write_bytes(b"y" * 10)
    assert disk_bytes(tmp_path / "m.mlpackage") == 1002
    assert disk_bytes(tmp_path / "model.onnx") == 10
