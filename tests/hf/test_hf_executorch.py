"""`hf:` causal LMs to ExecuTorch through the CLI: batch and length stay dynamic, and the
program validates against transformers over its ranges.

The tiny Qwen3-Next used to come out with every dim fixed: its gated projections are
`torch.split`s, on which ExecuTorch's edge verifier fixed the batch and the length, and the
program then failed at any other shape (edgegate.exporters.executorch.export)."""

from __future__ import annotations

import importlib.util

import pytest

from edgegate.manifest import read_manifest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("executorch") is None,
    reason="executorch is not installed (pip install 'edgegate-nn[executorch]')",
)

SEQ_LEN = 32  # the export's length: the program's range is 1..SEQ_LEN


@pytest.mark.slow  # about a minute on two cores: torch.export, lowering, and validate
def test_qwen3_next_exports_to_executorch_with_batch_and_length_dynamic(
    run_cli, qwen3_next_dir, tmp_path
):
    out = tmp_path / "et"
    spec = f"hf:{qwen3_next_dir}"
    export = run_cli(
        "export", spec, "--target", "executorch", "--seq-len", SEQ_LEN, "-o", out, "--json"
    )
    assert export.code == 0, export.stderr
    assert "fixed at" not in export.stderr, export.stderr
    manifest = read_manifest(out)
    assert manifest.inputs[0].shape == ["batch", "seq_len"]
    assert manifest.ranges["model"]["fixed"] == []
    part = manifest.extra["executorch"]["parts"]["model"]
    assert part["static_dims"] == []
    assert part["dynamic_ranges"]["tokens"] == {"batch": [1, 8], "seq_len": [1, SEQ_LEN]}
    assert [s["op"] for s in export.json()["recurrences"]["swapped"]] == ["GatedDeltaRule"]

    text = tmp_path / "text.txt"
    text.write_bytes(bytes(range(32, 127)) * 40)  # a few windows of byte tokens
    check = run_cli("validate", out, "--parity-samples", "16", "--data", text, "--json")
    assert check.code == 0, (check.stdout, check.stderr)
    report = check.json()
    assert report["passed"] and report["runtime"] == "executorch"
    assert report["ranges"]["model"]["passed"] is True
    assert report["top1_agreement"] == pytest.approx(100.0)
