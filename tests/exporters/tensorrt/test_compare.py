"""The kit's compare.py, as the device runs it (Python and numpy, trtexec's JSON files), and its
rules, which are validate's: decisions (top-1, gates) and decisive flips, not max abs alone."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edgegate.exporters.tensorrt as trt_exporter
from edgegate.targets import get_target
from edgegate.targets.tensorrt import kit_tolerance

SCRIPT = Path(trt_exporter.__file__).parent / "kit_files" / "compare.py"
_spec = importlib.util.spec_from_file_location("kit_compare", SCRIPT)
compare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare)


@pytest.fixture(scope="module")
def kit(tmp_path_factory) -> Path:
    from edgegate.pipeline.export import export

    out = tmp_path_factory.mktemp("kit") / "hgrn"
    export("hgrn-lm:depth=1,dim=32,heads=2", out, target="tensorrt", seq_len=16)
    return out


def _engine_outputs(kit: Path, change=lambda name, value: value) -> None:
    """Write each case's golden/<part>.<case>.trt.json as trtexec --exportOutput would, from
    ONNX Runtime, with ``change`` applied to the outputs."""
    golden = json.loads((kit / "golden" / "golden.json").read_text())
    with get_target("tensorrt").runner(kit / "model.onnx") as runner:
        for case in golden["parts"][0]["cases"]:
            feed = {
                i["name"]: np.fromfile(kit / "golden" / i["file"], i["dtype"]).reshape(i["shape"])
                for i in case["inputs"]
            }
            records = []
            for name, value in runner.run(feed).items():
                value = change(name, value)
                dims = "x".join(str(d) for d in value.shape)
                records.append({"name": name, "dimensions": dims, "values": value.ravel().tolist()})
            (kit / "golden" / case["engine_outputs"]).write_text(json.dumps(records))
    times = [{"latencyMs": 1.0 + i / 100, "computeMs": 0.9} for i in range(100)]
    (kit / "golden" / "model.times.json").write_text(json.dumps(times))


def _compare(kit: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(kit / "compare.py"), str(kit)],
                          capture_output=True, text=True)  # fmt: skip


def test_matching_engine_outputs_pass_over_every_case(kit):
    _engine_outputs(kit)
    proc = _compare(kit)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "PASS"
    results = json.loads((kit / "results.json").read_text())
    part = results["parts"]["model"]
    assert results["passed"] and part["cases"] == 2 and part["latency_ms"]["runs"] == 100
    assert part["outputs"]["logits"]["top1_agreement"] == 100.0
    assert (part["latency_ms"]["p50"], part["latency_ms"]["p99"]) == (
        pytest.approx(1.49),
        pytest.approx(1.98),
    )


def test_engine_outputs_with_other_decisions_fail(kit):
    _engine_outputs(kit, lambda name, value: np.roll(value, 1, axis=-1))
    proc = _compare(kit)
    assert proc.returncode == 1
    verdict = proc.stdout.strip().splitlines()[-1]
    assert verdict.startswith("FAIL: ") and "model.logits: top-1 agreement 0.00 %" in verdict


def test_a_missing_engine_output_file_is_its_own_failure(kit):
    _engine_outputs(kit)
    (kit / "golden" / "model.1.trt.json").unlink()
    proc = _compare(kit)
    assert proc.returncode == 2 and "model.1.trt.json is missing" in proc.stdout


# --- the rules, on arrays -----------------------------------------------------------------

INT8 = kit_tolerance("int8")
FP32 = kit_tolerance("fp32")


def _logits(rows: int = 64, classes: int = 10, margin: float = 2.0) -> np.ndarray:
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((rows, classes))
    logits[np.arange(rows), rng.integers(0, classes, rows)] += margin  # a clear winner each
    return logits


def test_small_errors_and_flips_on_near_ties_pass_decisive_flips_fail():
    ref = _logits()
    metrics, bad = compare.compare_output(ref, ref + 1e-3, INT8, classifier=True)
    assert not bad and metrics["top1_agreement"] == 100.0
    tie = ref.copy()
    tie[0, :2] = [5.0, 5.0 - 1e-3]  # a near-tie: the tolerance's error may flip it
    flipped = tie.copy()
    flipped[0, :2] = flipped[0, 1::-1]
    metrics, bad = compare.compare_output(tie, flipped, INT8, classifier=True)
    assert not bad and metrics["top1_agreement"] < 99.5
    assert metrics["decisive_top1_agreement"] == 100.0
    decisive = ref.copy()  # one row in 16 swaps winner and runner-up: close in cosine,
    order = np.argsort(ref, axis=-1)  # but decisions a clear margin apart
    for row in range(0, len(ref), 16):
        first, second = order[row, -1], order[row, -2]
        decisive[row, [first, second]] = ref[row, [second, first]]
    metrics, bad = compare.compare_output(ref, decisive, INT8, classifier=True)
    assert metrics["cosine"] > INT8["min_cosine"]
    assert len(bad) == 1 and bad[0].startswith("top-1 agreement 93.75 %")


def test_gate_decisions_judge_gate_outputs():
    ref = np.linspace(0.05, 0.95, 8)
    _, bad = compare.compare_output(ref, ref + 0.02, FP32, classifier=False, gate=True)
    assert not bad
    _, bad = compare.compare_output(ref, 1 - ref, FP32, classifier=False, gate=True)
    assert any(line.startswith("gate decisions agree on") for line in bad)


def test_other_outputs_are_judged_by_error_and_cosine():
    ref = _logits()
    metrics, bad = compare.compare_output(ref, ref + 0.05, FP32, classifier=False)
    assert bad == [f"max abs {metrics['max_abs']:.3g} > {compare.allowed_abs(ref, FP32):.3g}"]
    _, bad = compare.compare_output(ref, ref[:, :5], FP32, classifier=False)
    assert bad[0].startswith("shape")
