"""`hf:` causal LMs to ExecuTorch through the CLI: batch and length stay dynamic, and the
program validates against transformers over its ranges.

The tiny Qwen3-Next used to come out with every dim fixed: its gated projections are
`torch.split`s, on which ExecuTorch's edge verifier fixed the batch and the length, and the
program then failed at any other shape (edgegate.exporters.executorch.export)."""

from __future__ import annotations

import importlib.util

import pytest

from edgegate.manifest import read_manifest
from tests.conftest import load_benchmark

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


@pytest.mark.slow  # about a minute on two cores: a static export at T=512, then 3 runs
def test_recurrences_benchmark_times_its_static_executorch_program(qwen3_next_dir, tmp_path):
    """benchmarks/bench_hf_recurrences.py's ExecuTorch row: the static (batch 1, T=512) export
    of the recognised Qwen3-Next runs, as often as the bench times it.

    The row used to load the program with ``Runtime.load_program(path.read_bytes())
    .load_method("forward")``: the temporary Program holds the bytes the method reads, so
    they were freed before the first run, and XNNPACK resized an output to garbage
    ("Attempted to resize a static tensor. Expected shape (0, 0, 0), but received
    (64, 0, 386356576)"). The program itself was sound (its export's smoke run passed)."""
    import argparse

    import numpy as np
    import torch

    from edgegate.models import load_model
    from edgegate.pipeline.recurrences import prepare_recurrences
    from edgegate.runtime import ExecuTorchRunner

    bench = load_benchmark("bench_hf_recurrences")

    module = load_model(f"hf:{qwen3_next_dir}").module.eval()
    tokens = torch.randint(0, 256, (2, 512), generator=torch.Generator().manual_seed(0))
    report = prepare_recurrences(module, (tokens[:, :64],))
    assert [s.op for s in report.swapped] == ["GatedDeltaRule"]
    path = tmp_path / "rec.pte"
    with torch.no_grad():
        row = bench._et_row(module, tokens, path, argparse.Namespace(threads=2, runs=2))
        want = module(tokens[:1]).numpy()
    assert row["pass_ms"] > 0 and row["delegates"] > 0, row
    with ExecuTorchRunner(path, threads=2) as runner:
        got = runner.run({"tokens": tokens[:1].numpy()})["logits"]
    assert got.shape == (1, 512, 256)
    np.testing.assert_allclose(got, want, atol=1e-3 * max(1.0, float(np.abs(want).max())))
