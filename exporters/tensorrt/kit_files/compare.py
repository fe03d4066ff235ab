#!/usr/bin/env python3
"""Judge a TensorRT engine's outputs against PyTorch's, on the device (Python 3 + numpy only).

Reads golden/golden.json (each part's cases: inputs, PyTorch's outputs, and the tolerance
edgegate wrote), the outputs trtexec exported for each case (golden/<part>.<case>.trt.json)
and, when present, the per-run times (golden/<part>.times.json). Writes results.json beside
this script, prints one line per output, and ends with PASS or FAIL (exit status 0 or 1; 2 when
a file is missing or unreadable).

The rules are edgegate validate's, over every case of a part together:
- max abs error within ``max_abs_rel`` of the output's scale (at least 1);
- cosine similarity at least ``min_cosine`` where the signal lies above that error;
- classifier outputs (argmax over the last axis): top-1 agreement at least
  ``min_top1_agreement`` percent; with ``agreement_suffices`` (fp16, INT8, TF32), the rows that
  are not near-ties (reference's top two further apart than the allowed error) may pass it, and
  the decision alone judges the output (not its max abs);
- gate outputs (``>= gate_threshold`` is "on"): decisions agree on ``min_gate_agreement``
  percent, judged by that alone under ``agreement_suffices``.

Usage: python3 compare.py [KIT_DIR]
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np


def _load_json(path: Path):
    """trtexec may print nan/inf as bare words: read them as JSON numbers."""
    text = path.read_text()
    for word, value in (
        ("-nan", "NaN"),
        ("nan", "NaN"),
        ("-inf", "-Infinity"),
        ("inf", "Infinity"),
    ):
        text = text.replace(f" {word},", f" {value},").replace(f" {word} ]", f" {value} ]")
    return json.loads(text)


def _dims(text: str) -> tuple[int, ...]:
    return tuple(int(d) for d in text.split("x")) if text else ()


def allowed_abs(ref: np.ndarray, tolerance: dict) -> float:
    """The absolute error allowed on an output like ``ref``: relative to max(1, max |ref|)."""
    return tolerance["max_abs_rel"] * max(1.0, float(np.abs(ref).max()) if ref.size else 1.0)


def top1_agreement(ref: np.ndarray, cand: np.ndarray, near_tie: float = 0.0) -> float | None:
    """Percent of rows whose argmax agrees, leaving out rows whose reference top two lie within
    ``near_tie``; None when no row is left."""
    ref2, cand2 = ref.reshape(-1, ref.shape[-1]), cand.reshape(-1, cand.shape[-1])
    agree = ref2.argmax(-1) == cand2.argmax(-1)
    if near_tie > 0 and ref2.shape[-1] > 1:
        top2 = np.sort(ref2, axis=-1)[:, -2:]
        agree = agree[(top2[:, 1] - top2[:, 0]) > near_tie]
    return 100.0 * float(agree.mean()) if agree.size else None


def compare_output(
    expected: np.ndarray, got: np.ndarray, tolerance: dict, classifier: bool, gate: bool = False
) -> tuple[dict, list[str]]:
    """Metrics of one output and why it fails (empty: it passes), by validate's rules."""
    if expected.shape != got.shape:
        return {"shape": list(got.shape)}, [f"shape {list(got.shape)} != {list(expected.shape)}"]
    ref, cand = expected.astype(np.float64), got.astype(np.float64)
    failures = []
    if not np.isfinite(cand).all():
        failures.append("non-finite values")
    r, c = ref.ravel(), cand.ravel()
    err = np.abs(c - r)
    norms = float(np.linalg.norm(r) * np.linalg.norm(c))
    cosine = float(r @ c / norms) if norms > 0 else (1.0 if np.array_equal(r, c) else 0.0)
    metrics = {"max_abs": float(err.max()) if err.size else 0.0, "cosine": round(cosine, 9)}
    allowed = allowed_abs(ref, tolerance)
    by_agreement = tolerance["agreement_suffices"] and (classifier or gate)
    if not metrics["max_abs"] <= allowed and not by_agreement:
        failures.append(f"max abs {metrics['max_abs']:.3g} > {allowed:.3g}")
    signal = float(np.sqrt(np.mean(np.square(r)))) if r.size else 0.0
    if not cosine >= tolerance["min_cosine"] and signal > allowed:
        failures.append(f"cosine {cosine:.6f} < {tolerance['min_cosine']}")
    if classifier and ref.ndim >= 1 and ref.size:
        failures += _judge_top1(metrics, ref, cand, tolerance, allowed)
    if gate:
        threshold = tolerance["gate_threshold"]
        agree = 100.0 * float(((ref >= threshold) == (cand >= threshold)).mean())
        metrics["gate_agreement"] = round(agree, 4)
        if agree < tolerance["min_gate_agreement"]:
            failures.append(f"gate decisions agree on {agree:.2f} %")
    return metrics, failures


def _judge_top1(
    metrics: dict, ref: np.ndarray, cand: np.ndarray, tolerance: dict, near_tie: float
) -> list[str]:
    """Top-1 agreement; under ``agreement_suffices`` the decisive rows' agreement may pass it,
    and with no decisive row the error relative to the output's own scale judges."""
    agree = top1_agreement(ref, cand)
    metrics["top1_agreement"] = None if agree is None else round(agree, 4)
    if agree is None:
        return []
    wanted = tolerance["min_top1_agreement"]
    if not tolerance["agreement_suffices"]:
        return [] if agree >= wanted else [f"top-1 agreement {agree:.2f} %"]
    decisive = top1_agreement(ref, cand, near_tie)
    metrics["decisive_top1_agreement"] = None if decisive is None else round(decisive, 4)
    if max(agree, decisive if decisive is not None else agree) >= wanted:
        return []
    own_scale = tolerance["max_abs_rel"] * float(np.abs(ref).max())
    if decisive is None and metrics["max_abs"] <= own_scale:
        return []
    if decisive is None:
        detail = f"; no row is decisive and max abs {metrics['max_abs']:.3g} > {own_scale:.3g}"
    elif decisive == agree:
        detail = ""
    else:
        detail = f"; {decisive:.2f} % where not a near-tie"
    return [f"top-1 agreement {agree:.2f} %{detail}"]


def latency(times_file: Path) -> dict | None:
    if not times_file.is_file():
        return None
    runs = [t["latencyMs"] for t in _load_json(times_file) if "latencyMs" in t]
    if not runs:
        return None
    ordered = sorted(runs)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))], 4)

    return {"runs": len(runs), "p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99)}


class Missing(Exception):
    """A file compare.py needs is absent: exit 2."""


def _rows(array: np.ndarray) -> np.ndarray:
    """An output as rows over its last axis, so cases of other batches or lengths join."""
    return array.reshape(-1, array.shape[-1]) if array.ndim > 1 else array.reshape(-1, 1)


def judge_part(golden_dir: Path, part: dict, tolerance: dict) -> tuple[dict, list[str]]:
    """Every output of one part, over all its cases together."""
    stem = part["stem"]
    expected: dict[str, list[np.ndarray]] = {}
    got: dict[str, list[np.ndarray]] = {}
    kinds: dict[str, dict] = {}
    failures = []
    for index, case in enumerate(part["cases"]):
        exported = golden_dir / case["engine_outputs"]
        if not exported.is_file():
            raise Missing(f"{exported} is missing (did golden run {index} of {stem} fail?)")
        engine = {o["name"]: o for o in _load_json(exported)}
        for output in case["outputs"]:
            name = output["name"]
            kinds[name] = output
            reference = np.load(golden_dir / output["file"], allow_pickle=False)
            if name not in engine:
                failures.append(f"{stem}.{name}: missing from case {index}'s engine outputs")
                continue
            values = np.asarray(engine[name]["values"], dtype=np.float64)
            shape = _dims(engine[name]["dimensions"])
            if values.size != int(np.prod(shape)) or shape != reference.shape:
                failures.append(
                    f"{stem}.{name}: case {index} gave dims {list(shape)} ({values.size} values),"
                    f" PyTorch {list(reference.shape)}"
                )
                continue
            expected.setdefault(name, []).append(_rows(reference))
            got.setdefault(name, []).append(_rows(values.reshape(shape)))
    block = {"cases": len(part["cases"]), "outputs": {}}
    for name in expected:
        if len(expected[name]) != len(part["cases"]):
            continue  # already failed above
        metrics, bad = compare_output(
            np.concatenate(expected[name]),
            np.concatenate(got[name]),
            tolerance,
            kinds[name]["classifier"],
            kinds[name].get("gate", False),
        )
        block["outputs"][name] = {**metrics, "passed": not bad}
        print(f"{stem}.{name}: " + ", ".join(f"{k} {v}" for k, v in metrics.items()))
        failures += [f"{stem}.{name}: {reason}" for reason in bad]
    return block, failures


def main(kit: Path) -> int:
    golden_dir = kit / "golden"
    try:
        golden = json.loads((golden_dir / "golden.json").read_text())
    except (OSError, ValueError) as exc:
        print(f"FAIL: cannot read {golden_dir / 'golden.json'}: {exc}")
        return 2
    tolerance = golden["tolerance"]
    results = {"precision": golden["precision"], "tolerance": tolerance, "parts": {}}
    failures = []
    for part in golden["parts"]:
        try:
            block, bad = judge_part(golden_dir, part, tolerance)
        except Missing as exc:
            print(f"FAIL: {exc}")
            return 2
        block["latency_ms"] = latency(golden_dir / f"{part['stem']}.times.json")
        results["parts"][part["stem"]] = block
        failures += bad
    results["passed"] = not failures
    results["failures"] = failures
    (kit / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print("PASS" if not failures else "FAIL: " + "; ".join(failures))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent))
