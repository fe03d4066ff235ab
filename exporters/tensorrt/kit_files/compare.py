#!/usr/bin/env python3
"""Judge a TensorRT engine's outputs against PyTorch's, on the device (Python 3 + numpy only).

Reads golden/golden.json (inputs, expected outputs and tolerances written by edgegate), the
outputs trtexec exported for each part (golden/<part>.trt.json) and, when present, the per-run
times (golden/<part>.times.json). Writes results.json beside this script, prints one line per
output, and ends with PASS or FAIL (exit status 0 or 1; 2 when a file is missing or unreadable).

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


def compare_output(expected: np.ndarray, got: np.ndarray, tolerance: dict, classifier: bool):
    """Per-output metrics and failures (strings) against the tolerance."""
    ref, cand = expected.astype(np.float64).ravel(), got.astype(np.float64).ravel()
    failures = []
    if ref.shape != cand.shape:
        return {"shape": list(got.shape)}, [f"shape {list(got.shape)} != {list(expected.shape)}"]
    if not np.isfinite(cand).all():
        failures.append("non-finite values")
    err = np.abs(cand - ref)
    norms = float(np.linalg.norm(ref) * np.linalg.norm(cand))
    cosine = float(ref @ cand / norms) if norms > 0 else float(np.array_equal(ref, cand))
    scale = max(1.0, float(np.abs(ref).max())) if ref.size else 1.0
    metrics = {
        "max_abs": float(err.max()) if err.size else 0.0,
        "cosine": round(cosine, 8),
    }
    if metrics["max_abs"] > tolerance["max_abs_rel"] * scale:
        failures.append(
            f"max abs {metrics['max_abs']:.3g} > {tolerance['max_abs_rel'] * scale:.3g}"
        )
    if not cosine >= tolerance["min_cosine"]:
        failures.append(f"cosine {cosine:.6f} < {tolerance['min_cosine']}")
    if classifier and expected.ndim >= 2:
        classes = expected.shape[-1]
        agree = expected.reshape(-1, classes).argmax(-1) == got.reshape(-1, classes).argmax(-1)
        metrics["top1_agreement"] = round(100.0 * float(agree.mean()), 4)
        if metrics["top1_agreement"] < tolerance["min_top1_agreement"]:
            failures.append(f"top-1 agreement {metrics['top1_agreement']} %")
    return metrics, failures


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
        stem = part["stem"]
        exported = golden_dir / f"{stem}.trt.json"
        if not exported.is_file():
            print(f"FAIL: {exported} is missing (did the golden run of {stem} fail?)")
            return 2
        got = {o["name"]: o for o in _load_json(exported)}
        block = {"outputs": {}, "latency_ms": latency(golden_dir / f"{stem}.times.json")}
        for output in part["outputs"]:
            name = output["name"]
            expected = np.load(golden_dir / output["file"])
            if name not in got:
                failures.append(f"{stem}.{name}: missing from the engine's outputs")
                continue
            values = np.asarray(got[name]["values"], dtype=np.float64)
            shape = _dims(got[name]["dimensions"])
            if values.size != int(np.prod(shape)):
                failures.append(f"{stem}.{name}: {values.size} values for dims {shape}")
                continue
            metrics, bad = compare_output(
                expected, values.reshape(shape), tolerance, output["classifier"]
            )
            block["outputs"][name] = {**metrics, "passed": not bad}
            print(f"{stem}.{name}: " + ", ".join(f"{k} {v}" for k, v in metrics.items()))
            failures += [f"{stem}.{name}: {reason}" for reason in bad]
        results["parts"][stem] = block
    results["passed"] = not failures
    results["failures"] = failures
    (kit / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print("PASS" if not failures else "FAIL: " + "; ".join(failures))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent))
