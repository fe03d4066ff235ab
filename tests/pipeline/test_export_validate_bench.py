"""End to end through the CLI: export -> validate -> bench -> deploy on real onnxruntime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.conftest import assert_one_line_error


def test_export_writes_model_stages_and_manifest(gc_export):
    names = {p.name for p in gc_export.iterdir()}
    assert {"model.onnx", "stage1.onnx", "stage2.onnx", "manifest.json"} <= names
    assert not [n for n in names if n.startswith(".")], "staging leftovers"
    manifest = json.loads((gc_export / "manifest.json").read_text())
    assert manifest["model"] == "gc-mobilenet"
    assert manifest["inputs"][0]["name"] == "images"
    assert not isinstance(manifest["inputs"][0]["shape"][0], int), "batch must be dynamic"
    model = onnx.load(gc_export / "model.onnx")
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["model"] == "gc-mobilenet" and "edgegate_version" in meta
    assert json.loads(meta["inputs"])[0] == {
        "name": "images",
        "example_shape": [1, 3, 32, 32],
        "dtype": "float32",
    }


def test_validate_passes_with_accuracy_and_two_stage(run_cli, gc_export, tmp_path):
    junit = tmp_path / "parity.xml"
    result = run_cli("validate", gc_export, "--json", "--junit", junit)
    assert result.code == 0, result.stderr
    report = result.json()
    assert report["passed"] is True
    assert {"max_abs", "mean_abs", "cosine", "snr_db"} <= set(report["outputs"]["logits"])
    assert report["top1_agreement"] == pytest.approx(100.0)
    assert report["accuracy"]["candidate"]["top1"] == pytest.approx(
        report["accuracy"]["reference"]["top1"], abs=0.3
    )
    ts = report["two_stage"]
    assert ts["stop_rate_negatives"] > 90 and ts["pass_rate_positives"] > 80
    assert junit.read_text().startswith("<?xml")


def test_validate_fails_on_a_perturbed_weight(run_cli, gc_export, tmp_path):
    model = onnx.load(gc_export / "model.onnx")
    biggest = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    array = onnx.numpy_helper.to_array(biggest).copy()
    array += 0.5 * np.abs(array).max()
    biggest.CopyFrom(onnx.numpy_helper.from_array(array, biggest.name))
    perturbed = tmp_path / "perturbed.onnx"
    onnx.save(model, perturbed)
    result = run_cli("validate", perturbed, "--reference", "gc-mobilenet", "--json")
    assert result.code == 1, result.stderr
    assert result.json()["passed"] is False


def test_validate_rejects_a_corrupt_onnx(run_cli, tmp_path):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage" * 50)
    junit = tmp_path / "parity.xml"
    result = run_cli("validate", corrupt, "--reference", "gc-mobilenet", "--junit", junit)
    assert_one_line_error(result, "corrupt.onnx")
    # CI still gets a verdict: the JUnit file reports the bad input as a failure
    assert 'failures="1"' in junit.read_text() and "corrupt.onnx" in junit.read_text()


def test_validate_rejects_a_missing_file(run_cli, tmp_path):
    assert_one_line_error(
        run_cli("validate", tmp_path / "nope.onnx", "--reference", "gc-mobilenet"), "nope.onnx"
    )


def test_validate_rejects_inputs_of_the_wrong_shape(run_cli, gc_export):
    """A token LM as the reference feeds int token windows to an image model."""
    result = run_cli("validate", gc_export / "model.onnx", "--reference", "qlm")
    assert_one_line_error(result, "images")


def test_tampered_export_folder_is_bad_input(run_cli, gc_export, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(gc_export, copy)
    (copy / "stage2.onnx").write_bytes(b"tampered")
    assert_one_line_error(run_cli("validate", copy), "stage2.onnx")


def test_bench_reports_latency_and_the_two_stage_stream(run_cli, gc_export, tmp_path):
    plot = tmp_path / "latency.png"
    result = run_cli("bench", gc_export, "--runs", "10", "--json", "--plot", plot)
    assert result.code == 0, result.stderr
    report = result.json()
    lat = report["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
    assert report["throughput_per_s"] > 0 and report["peak_rss_mb"] > 0
    assert report["runtime"] == "onnxruntime"
    assert report["two_stage"]["mean_latency_ms"] > 0
    assert report["two_stage"]["stage1_threads"] == 1  # the always-on stage: one thread
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_bench_stage1_threads_reach_the_stage_one_session(gc_export, monkeypatch):
    """--stage1-threads sizes stage 1's session; stage 2 and the full model get --threads (the
    full model twice: timed alone, and beside the stream with its threads idle between runs)."""
    from edgegate.pipeline.bench import bench
    from edgegate.runtime import OnnxRuntimeRunner

    sized = []
    original = OnnxRuntimeRunner.__init__

    def record(self, path, threads=None, *args, **kwargs):
        sized.append((Path(path).name, threads))
        original(self, path, threads, *args, **kwargs)

    monkeypatch.setattr(OnnxRuntimeRunner, "__init__", record)
    result = bench(gc_export, runs=2, warmup=0, threads=2, stage1_threads=1, stream_samples=5)
    assert result["two_stage"]["stage1_threads"] == 1
    assert sorted(sized) == [
        ("model.onnx", 2),
        ("model.onnx", 2),
        ("stage1.onnx", 1),
        ("stage2.onnx", 2),
    ]


def test_bench_refuses_zero_stage1_threads(run_cli, gc_export):
    assert_one_line_error(run_cli("bench", gc_export, "--stage1-threads", "0"), "--stage1-threads")


def test_deploy_writes_reports(run_cli, tmp_path):
    out = tmp_path / "deploy"
    result = run_cli("deploy", "-o", out, "--runs", "5")
    assert result.code == 0, result.stderr
    assert (out / "report.md").read_text().startswith("# edgegate deploy")
    report = json.loads((out / "report.json").read_text())
    assert report["passed"] is True and report["model"] == "gc-mobilenet"
    assert report["export"]["weights"] == "shipped"


def test_export_unknown_target(run_cli, tmp_path):
    out = tmp_path / "x"
    assert_one_line_error(run_cli("export", "qvit", "--target", "tflite", "-o", out), "tflite")
    assert not out.exists()


def test_failed_export_leaves_nothing(run_cli, tmp_path):
    out = tmp_path / "x"
    result = run_cli("export", "qvit", "--input-size", "24", "-o", out)
    assert result.code == 2, result.stderr
    assert not out.exists()
    assert not list(tmp_path.iterdir())


def test_an_onnx_file_inside_an_export_folder_uses_its_manifest(run_cli, gc_export):
    result = run_cli("bench", gc_export / "model.onnx", "--runs", "3", "--json")
    assert result.code == 0, result.stderr
    assert result.json()["batch"] == 1


def test_export_says_when_weights_are_random(run_cli, tmp_path):
    result = run_cli("export", "hgrn-lm:depth=1", "-o", tmp_path / "h", "--json")
    assert result.code == 0, result.stderr
    assert result.json()["weights"].startswith("random init")
