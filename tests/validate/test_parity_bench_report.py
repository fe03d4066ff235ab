"""Parity metrics, benchmark statistics and report formats."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from torch import nn

from edgegate.runtime import TorchRunner
from edgegate.validate.bench import bench
from edgegate.validate.parity import Tolerance, compare_outputs, output_parity, top1_agreement
from edgegate.validate.report import parity_cases, to_json, write_json, write_junit


def test_identical_outputs_have_infinite_snr():
    a = np.random.default_rng(0).standard_normal((4, 10)).astype(np.float32)
    m = output_parity(a, a.copy())
    assert m.max_abs == 0 and m.cosine == pytest.approx(1.0) and math.isinf(m.snr_db)


def test_perturbation_breaks_fp32_tolerance_and_counts_disagreements():
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((100, 10)).astype(np.float32)
    cand = ref.copy()
    cand[:7] = -cand[:7]  # flips the argmax of (almost surely) those rows
    gate_ref = np.linspace(0, 1, 100, dtype=np.float32)
    gate_cand = gate_ref.copy()
    gate_cand[50] = 0.0  # 0.505 -> 0: one gate decision flips
    report = compare_outputs(
        {"logits": ref, "gate_prob": gate_ref},
        {"logits": cand, "gate_prob": gate_cand},
        Tolerance.for_precision("fp32"),
        gate_outputs={"gate_prob"},
        classifier_outputs={"logits"},
    )
    assert not report.passed
    assert report.top1_agreement <= 93.0
    assert report.gate_agreement == pytest.approx(99.0)
    assert any("max abs" in f for f in report.failures)


def test_small_error_passes_fp32():
    ref = np.ones((3, 4), np.float32)
    report = compare_outputs({"y": ref}, {"y": ref + 1e-6}, Tolerance.for_precision("fp32"))
    assert report.passed and report.outputs["y"].snr_db > 100


def test_shape_mismatch_is_a_failure_not_an_exception():
    report = compare_outputs(
        {"y": np.ones((2, 3))}, {"y": np.ones((3, 2))}, Tolerance.for_precision("fp32")
    )
    assert not report.passed and "shape" in report.failures[0]


def _logits_with_near_ties(rows: int = 1000, classes: int = 16, seed: int = 0):
    """Reference logits where every 10th row's top two are 0.01 apart (a near-tie)."""
    rng = np.random.default_rng(seed)
    ref = rng.normal(size=(rows, classes)).astype(np.float32)
    top = ref.argmax(-1)
    ref[np.arange(rows), top] += 2.0  # decisive margin everywhere...
    near = np.arange(0, rows, 10)
    second = (top[near] + 1) % classes
    ref[near, second] = ref[near, top[near]] - 0.01  # ...except the near-ties
    return ref, near, second


def test_top1_agreement_leaves_out_near_ties_only():
    ref, near, second = _logits_with_near_ties()
    cand = ref.copy()
    cand[near, second] += 0.02  # flips exactly the near-tie rows
    assert top1_agreement(ref, cand) == pytest.approx(90.0)
    assert top1_agreement(ref, cand, near_tie=0.05) == 100.0
    decisive = np.setdiff1d(np.arange(len(ref)), near)[:5]
    cand[decisive, (ref[decisive].argmax(-1) + 3) % ref.shape[1]] += 10.0  # real mismatches
    assert top1_agreement(ref, cand, near_tie=0.05) == pytest.approx(100 * (1 - 5 / 900))


def test_int8_passes_near_tie_flips_but_fails_decisive_ones():
    ref, near, second = _logits_with_near_ties()
    tol = Tolerance.for_precision("int8")
    flipped = ref.copy()
    flipped[near, second] += 0.02
    report = compare_outputs(
        {"logits": ref}, {"logits": flipped}, tol, classifier_outputs={"logits"}
    )
    assert report.passed and report.top1_agreement == pytest.approx(90.0), report.failures
    assert report.decisive_top1_agreement == 100.0
    wrong = ref.copy()
    rows = np.arange(1, 60, 2)  # 30 decisive rows (odd, so never a multiple of 10) flip
    wrong[rows, (ref[rows].argmax(-1) + 1) % ref.shape[1]] = ref[rows].max(-1) + 0.5
    report = compare_outputs({"logits": ref}, {"logits": wrong}, tol, classifier_outputs={"logits"})
    assert any("top-1 agreement 97.00 %; 96.67 % where" in f for f in report.failures), report


def test_int8_gate_output_is_judged_by_its_decisions_not_its_steps():
    """A sigmoid gate's output moves several of its steps for one step at its input: INT8
    judges it by the decisions it makes, which must still agree."""
    rng = np.random.default_rng(0)
    ref = rng.uniform(0, 1, size=(400, 1)).astype(np.float32)
    ref[np.abs(ref - 0.5) < 0.06] = 0.8  # keep every decision clear of the threshold
    tol = Tolerance.for_precision("int8")
    moved = ref + np.float32(0.04)  # ten steps of 1/256: beyond 4 steps of 1/127
    report = compare_outputs(
        {"gate_prob": ref}, {"gate_prob": moved}, tol, gate_outputs={"gate_prob"}
    )
    assert report.passed and report.gate_agreement == 100.0, report.failures
    flipped = ref.copy()
    flipped[:4] = 1 - flipped[:4]  # 1 % of decisions flip
    report = compare_outputs(
        {"gate_prob": ref}, {"gate_prob": flipped}, tol, gate_outputs={"gate_prob"}
    )
    assert any("gate decisions agree on 99.00 %" in f for f in report.failures), report.failures
    fp32 = compare_outputs(
        {"gate_prob": ref}, {"gate_prob": moved}, Tolerance.for_precision("fp32"),
        gate_outputs={"gate_prob"},
    )  # fmt: skip
    assert not fp32.passed  # float stays judged by its error


def test_fp16_logits_are_judged_by_their_decisions_and_cosine():
    """Half rounding moves a deep LM's logits past 1 % of their scale (qlm with gated attention
    in Core ML fp16: 0.167 of 13.7) while 99.8 % of decisions and the perplexity hold."""
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((500, 16)).astype(np.float32) * 4
    moved = ref + rng.standard_normal(ref.shape).astype(np.float32) * 0.03
    moved[0, 0] += 0.5  # one logit far past 1e-2 of the scale, no decision with it
    tol = Tolerance.for_precision("fp16")
    assert np.abs(moved - ref).max() > tol.allowed_abs(ref)
    report = compare_outputs({"logits": ref}, {"logits": moved}, tol, classifier_outputs={"logits"})
    assert report.passed, report.failures
    flipped = moved.copy()
    rows = np.arange(10)  # 2 % of decisive decisions flip
    flipped[rows, (ref[rows].argmax(-1) + 1) % 16] = ref[rows].max(-1) + 3
    report = compare_outputs(
        {"logits": ref}, {"logits": flipped}, tol, classifier_outputs={"logits"}
    )
    assert any("top-1 agreement" in f for f in report.failures), report.failures
    noisy = ref + rng.standard_normal(ref.shape).astype(np.float32) * 0.5
    report = compare_outputs({"logits": ref}, {"logits": noisy}, tol, classifier_outputs={"logits"})
    assert any("cosine" in f for f in report.failures)  # noise everywhere still fails


def test_bench_statistics_are_ordered():
    runner = TorchRunner(nn.Linear(8, 8), ["x"], ["y"])
    result = bench(runner, {"x": np.ones((4, 8), np.float32)}, runs=20, warmup=2)
    lat = result.latency_ms
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"]
    assert result.throughput_per_s > 0 and result.peak_rss_mb > 0 and result.batch == 4


def test_json_handles_inf_nan_and_numpy(tmp_path):
    payload = {"snr": math.inf, "x": np.float32(1.5), "arr": np.arange(3), "nan": math.nan}
    assert json.loads(to_json(payload)) == {"snr": "inf", "x": 1.5, "arr": [0, 1, 2], "nan": "nan"}
    path = write_json(tmp_path / "r.json", payload)
    assert json.loads(path.read_text())["arr"] == [0, 1, 2]


def test_junit_counts_failures(tmp_path):
    result = {
        "outputs": {"logits": {}, "gate_prob": {}},
        "failures": ["output 'logits': max abs 1 > 0.1"],
    }
    path = write_junit(tmp_path / "j.xml", "edgegate.validate", parity_cases(result))
    suite = ET.parse(path).getroot().find("testsuite")
    assert suite.get("tests") == "2" and suite.get("failures") == "1"
    failed = [c for c in suite.iter("testcase") if c.find("failure") is not None]
    assert [c.get("name") for c in failed] == ["parity[logits]"]


def test_stream_median_ratio_ignores_stalls_and_weights_each_kind_of_sample():
    """90 samples stop at stage 1 (1 ms), 10 pass to stage 2 (4 ms), the full model takes
    4 ms; two 100 ms scheduler stalls hit the stream: by medians it costs 0.325x."""
    from edgegate.validate.bench import _median_ratio

    times = [1.0] * 88 + [100.0] * 2 + [4.0] * 10
    passed = [False] * 90 + [True] * 10
    full = [4.0] * 100
    assert _median_ratio(times, passed, full) == pytest.approx(0.325)
    assert float(np.mean(times)) / float(np.mean(full)) > 0.5  # what the mean would say
    assert _median_ratio(times, passed, []) is None
