"""ONNX Runtime latency of mobilenet-v3-se: FP32 vs edgegate INT8 QDQ vs ORT's quantize_static.

Usage: .venv/bin/python benchmarks/bench_int8.py [--size 224 --threads 2 --runs 500 --json]
       [--model mobilenet-v3-se:width=1.0 --checkpoint w1.pt] [--ops]

Measures whether edgegate's INT8 QDQ export pays off on CPU (target: >= 2x faster than FP32)
and whether its Q/DQ placement is as fast as onnxruntime's own static quantizer (target:
within 5%). The reference is `quantize_static` (QDQ, per-channel s8 weights, u8 activations)
on the same FP32 export after ORT's recommended `quant_pre_process` (shape inference and
graph optimisation), calibrated on the same digits images. All three sessions run in this
one process, timed round-robin, so machine noise hits them alike.

`--ops` adds ORT's own per-operator profile (kernel time per op type, per run), which shows
where an INT8 graph loses: slow integer kernels or float islands between Q/DQ pairs.
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from edgegate.data.digits import digits
from edgegate.exporters.onnx.export import export_onnx
from edgegate.models import load_model
from edgegate.quant.calibrate import calibrate
from edgegate.quant.graph import QuantConfig, quantize_model
from edgegate.quant.profiles import get_profile
from edgegate.quant.qdq import to_qdq

DEFAULT_MODEL = "mobilenet-v3-se"
FORMS = ("fp32", "edgegate_int8", "ort_quantize_static")
CALIB_BATCH = 16


class ImageReader(CalibrationDataReader):
    """Feeds ORT's calibrator the same images, one batch-1 sample per call."""

    def __init__(self, name: str, images: np.ndarray) -> None:
        self._feeds = iter([{name: img[None]} for img in images])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def _session(path: Path, threads: int, profile_prefix: str | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # ORT's pool threads spin after each run by default; with three sessions taking turns on
    # two cores, one session's spinning threads would steal the next one's time
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _op_profile(path: Path, threads: int, x: np.ndarray, runs: int, tmp: Path) -> dict[str, float]:
    """Mean kernel microseconds per run for each op type, from ORT's own profiler."""
    session = _session(path, threads, str(tmp / path.stem))
    for _ in range(runs):
        _run(session, x)
    events = json.loads(Path(session.end_profiling()).read_text())
    per_op: collections.Counter[str] = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"]
    # The first run carries one-off allocation; ORT profiles it too, so it is averaged in.
    return {op: round(us / runs, 1) for op, us in per_op.most_common()}


def _calibration(size: int, calib_samples: int) -> torch.Tensor:
    """The digits calibration images every INT8 form here is calibrated on."""
    return digits("calib", size, 3).images[:calib_samples]


def _edgegate_int8(module, calib: torch.Tensor, path: Path, profile: str = "onnxruntime") -> Path:
    """edgegate's INT8 QDQ export under ``profile`` (what `edgegate quantize` writes)."""
    config = QuantConfig(get_profile(profile), "minmax")
    qmodel = quantize_model(module, config)
    calibrate(qmodel, [(b,) for b in torch.split(calib, CALIB_BATCH)])
    return export_onnx(to_qdq(qmodel), (calib[:1],), path)


def _build(
    tmp: Path,
    model: str,
    size: int,
    calib_samples: int,
    checkpoint: Path | None = None,
    profile: str = "onnxruntime",
) -> tuple[dict[str, Path], np.ndarray]:
    """Export the three models; returns their paths and one benchmark input."""
    module = load_model(model, checkpoint).module.eval()
    calib = _calibration(size, calib_samples)
    example = calib[:1]
    paths = {form: tmp / f"{form}.onnx" for form in FORMS}

    export_onnx(module, (example,), paths["fp32"])
    _edgegate_int8(module, calib, paths["edgegate_int8"], profile)

    preprocessed = tmp / "fp32_pre.onnx"
    quant_pre_process(str(paths["fp32"]), str(preprocessed))
    input_name = ort.InferenceSession(str(paths["fp32"])).get_inputs()[0].name
    quantize_static(
        str(preprocessed),
        str(paths["ort_quantize_static"]),
        ImageReader(input_name, calib.numpy()),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        reduce_range=get_profile(profile).weight_bits < 8,  # 7-bit weights on x86-avx2
    )
    return paths, example.numpy()


def _run(session: ort.InferenceSession, x: np.ndarray) -> list[np.ndarray]:
    return session.run(None, {session.get_inputs()[0].name: x})


def time_round_robin(
    calls: dict[str, Callable[[], object]], runs: int, warmup: int
) -> dict[str, list[float]]:
    """Milliseconds per call of each callable, round-robin: each round calls every one once,
    so drift and noise are shared."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for round_ in range(warmup + runs):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            if round_ >= warmup:
                times[name].append((time.perf_counter() - start) * 1e3)
    return times


def _time_interleaved(
    sessions: dict[str, ort.InferenceSession], x: np.ndarray, runs: int, warmup: int
) -> dict[str, list[float]]:
    """Round-robin over ONNX Runtime sessions on one input."""
    calls = {form: functools.partial(_run, session, x) for form, session in sessions.items()}
    return time_round_robin(calls, runs, warmup)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--model", default=DEFAULT_MODEL, help="zoo spec, e.g. mobilenet-v3-se:width=1.0"
    )
    ap.add_argument(
        "--checkpoint",
        type=Path,
        help="trained weights for a spec without shipped ones (edgegate train SPEC -o FILE)",
    )
    ap.add_argument(
        "--profile",
        default="onnxruntime",
        help="edgegate INT8 profile (default: this host's onnxruntime variant); quantize_static "
        "gets the matching reduce_range",
    )
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=500, help="timed rounds (each runs all three)")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--calib-samples", type=int, default=64)
    ap.add_argument("--ops", action="store_true", help="add a per-op-type kernel-time profile")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        paths, x = _build(Path(tmp), a.model, a.size, a.calib_samples, a.checkpoint, a.profile)
        sessions = {form: _session(paths[form], a.threads) for form in FORMS}
        outputs = {form: _run(s, x)[0] for form, s in sessions.items()}
        times = _time_interleaved(sessions, x, a.runs, a.warmup)
        ops = (
            {form: _op_profile(paths[form], a.threads, x, 100, Path(tmp)) for form in FORMS}
            if a.ops
            else None
        )
    p50 = {form: statistics.median(t) for form, t in times.items()}
    mean = {form: statistics.fmean(t) for form, t in times.items()}
    result = {
        "model": a.model,
        "config": {
            "size": a.size,
            "batch": 1,
            "threads": a.threads,
            "runs": a.runs,
            "warmup": a.warmup,
            "calib_samples": a.calib_samples,
            "onnxruntime": ort.__version__,
        },
        "p50_ms": {k: round(v, 3) for k, v in p50.items()},
        "mean_ms": {k: round(v, 3) for k, v in mean.items()},
        "max_abs_diff_vs_fp32": {
            form: float(np.abs(outputs[form] - outputs["fp32"]).max()) for form in FORMS[1:]
        },
        "fp32_over_edgegate_int8": round(p50["fp32"] / p50["edgegate_int8"], 3),
        "edgegate_int8_over_quantize_static": round(
            p50["edgegate_int8"] / p50["ort_quantize_static"], 3
        ),
    }
    if ops is not None:
        result["kernel_us_per_op_type"] = ops
    if a.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"{a.model} {a.size}x{a.size} batch=1 threads={a.threads} runs={a.runs} "
        f"(interleaved, ms) onnxruntime {ort.__version__}"
    )
    print(f"{'model':22} {'p50':>9} {'mean':>9} {'max|d| vs fp32':>15}")
    for form in FORMS:
        diff = result["max_abs_diff_vs_fp32"].get(form, 0.0)
        print(f"{form:22} {p50[form]:9.3f} {mean[form]:9.3f} {diff:15.3g}")
    speedup = result["fp32_over_edgegate_int8"]
    parity = result["edgegate_int8_over_quantize_static"]
    print(f"fp32 / edgegate_int8:                {speedup:6.2f}x  (target >= 2x)")
    print(f"edgegate_int8 / ort_quantize_static: {parity:6.3f}   (target <= 1.05)")
    if ops is not None:
        _print_ops(ops)


def _print_ops(ops: dict[str, dict[str, float]]) -> None:
    """Kernel time per op type (us per run), op types as rows and the three models as columns."""
    names = sorted(
        {op for per in ops.values() for op in per},
        key=lambda op: -max(per.get(op, 0.0) for per in ops.values()),
    )
    print(
        f"\nkernel time per op type (us/run, ORT profiler)\n{'op':22}"
        + "".join(f"{form:>22}" for form in FORMS)
    )
    for op in names:
        print(f"{op:22}" + "".join(f"{ops[form].get(op, 0.0):22.1f}" for form in FORMS))
    print(f"{'total':22}" + "".join(f"{sum(ops[form].values()):22.1f}" for form in FORMS))


if __name__ == "__main__":
    main()
