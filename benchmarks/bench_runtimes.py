"""ONNX Runtime vs ExecuTorch (XNNPACK) on mobilenet-v3-se, FP32 and INT8, in one run.

Usage: .venv/bin/python benchmarks/bench_runtimes.py [--size 224 --threads 2 --runs 300 --json]
       [--model mobilenet-v3-se --checkpoint w.pt]

Four forms of the same model, each as edgegate ships it:
- ``ort_fp32``: the FP32 ONNX export, run by ONNX Runtime;
- ``ort_int8``: edgegate's INT8 QDQ export for this host's ``onnxruntime`` profile, run by
  ONNX Runtime's fused integer kernels;
- ``et_fp32``: the FP32 .pte of ``--target executorch`` (XNNPACK, batch and side dynamic);
- ``et_int8``: the PT2E INT8 .pte of ``--target executorch --int8`` (XNNPACK's quantizer with
  edgegate's gate rules).

Both INT8 forms are calibrated on the same digits images. Batch 1, timed round-robin in this
one process (each round runs all four), so machine noise hits them alike; ONNX Runtime's pool
threads do not spin between runs, and ExecuTorch's pool is sized to ``--threads`` before its
programs load (``edgegate.runtime.ExecuTorchRunner``). Prints p50/p90 per form, the INT8
speedup per runtime and the ExecuTorch/ONNX Runtime ratio per precision.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import statistics
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from bench_int8 import _calibration, _edgegate_int8, _run, _session, time_round_robin

from edgegate.exporters.executorch import export_pte
from edgegate.exporters.onnx.export import export_onnx
from edgegate.hostcpu import host_isa
from edgegate.models import load_model
from edgegate.quant.profiles import get_profile
from edgegate.quant.pt2e import quantize_xnnpack
from edgegate.runtime import ExecuTorchRunner

FORMS = ("ort_fp32", "ort_int8", "et_fp32", "et_int8")
IMAGE_DIMS = [(0, 2, 3)]  # as `edgegate export` asks: batch and image side dynamic


def _build(tmp: Path, model: str, size: int, calib_samples: int, checkpoint: Path | None):
    """The four files, the float module and one benchmark input."""
    module = load_model(model, checkpoint).module.eval()
    calib = _calibration(size, calib_samples)
    example = calib[:1]
    paths = {
        "ort_fp32": export_onnx(module, (example,), tmp / "fp32.onnx"),
        "ort_int8": _edgegate_int8(module, calib, tmp / "int8.onnx", "onnxruntime"),
    }
    names = {"input_names": ["images"], "output_names": ["logits"], "dynamic_dims": IMAGE_DIMS}
    paths["et_fp32"] = export_pte(module, (example,), tmp / "fp32.pte", **names).path
    converted = quantize_xnnpack(
        module, (example,), IMAGE_DIMS, [(b,) for b in torch.split(calib, 16)], method="minmax"
    )
    paths["et_int8"] = export_pte(converted, (example,), tmp / "int8.pte", **names).path
    return paths, module, example.numpy()


def _ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b > 0 else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mobilenet-v3-se", help="zoo spec")
    ap.add_argument("--checkpoint", type=Path, help="weights for a spec without shipped ones")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=300, help="timed rounds (each runs all four)")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--calib-samples", type=int, default=64)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        paths, module, x = _build(Path(tmp), a.model, a.size, a.calib_samples, a.checkpoint)
        with torch.no_grad():
            reference = module(torch.from_numpy(x)).numpy()
        sessions = {form: _session(paths[form], a.threads) for form in FORMS[:2]}
        runners = {form: ExecuTorchRunner(paths[form], threads=a.threads) for form in FORMS[2:]}
        for runner in runners.values():
            runner.__enter__()
        try:
            calls = {form: functools.partial(_run, s, x) for form, s in sessions.items()}
            calls |= {form: functools.partial(r.run, {"images": x}) for form, r in runners.items()}
            outputs = {form: _run(session, x)[0] for form, session in sessions.items()}
            outputs |= {form: r.run({"images": x})["logits"] for form, r in runners.items()}
            times = time_round_robin(calls, a.runs, a.warmup)
            et_threads = runners["et_fp32"].threads
        finally:
            for runner in runners.values():
                runner.__exit__(None, None, None)
    p50 = {form: statistics.median(t) for form, t in times.items()}
    p90 = {form: float(np.percentile(t, 90)) for form, t in times.items()}
    result = {
        "model": a.model,
        "config": {
            "size": a.size,
            "batch": 1,
            "threads": a.threads,
            "executorch_threads": et_threads,
            "runs": a.runs,
            "warmup": a.warmup,
            "calib_samples": a.calib_samples,
            "onnxruntime": ort.__version__,
            "onnxruntime_int8_profile": get_profile("onnxruntime").name,
            "host": f"{platform.machine()} {host_isa()}",
        },
        "p50_ms": {k: round(v, 3) for k, v in p50.items()},
        "p90_ms": {k: round(v, 3) for k, v in p90.items()},
        "max_abs_diff_vs_torch_fp32": {
            form: float(np.abs(out - reference).max()) for form, out in outputs.items()
        },
        "int8_speedup": {
            "onnxruntime": _ratio(p50["ort_fp32"], p50["ort_int8"]),
            "executorch": _ratio(p50["et_fp32"], p50["et_int8"]),
        },
        "executorch_over_onnxruntime": {
            "fp32": _ratio(p50["et_fp32"], p50["ort_fp32"]),
            "int8": _ratio(p50["et_int8"], p50["ort_int8"]),
        },
    }
    if a.json:
        print(json.dumps(result, indent=2))
        return
    config = result["config"]
    print(
        f"{a.model} {a.size}x{a.size} batch=1 threads={a.threads} runs={a.runs} (round-robin, "
        f"ms) on {config['host']}; onnxruntime {ort.__version__} "
        f"(INT8 profile {config['onnxruntime_int8_profile']})"
    )
    print(f"{'form':10} {'p50':>9} {'p90':>9} {'max|d| vs torch':>16}")
    for form in FORMS:
        diff = result["max_abs_diff_vs_torch_fp32"][form]
        print(f"{form:10} {p50[form]:9.3f} {p90[form]:9.3f} {diff:16.3g}")
    speed, ratio = result["int8_speedup"], result["executorch_over_onnxruntime"]
    print(f"INT8 speedup (fp32 p50 / int8 p50): onnxruntime {speed['onnxruntime']:.2f}x, "
          f"executorch {speed['executorch']:.2f}x")  # fmt: skip
    print(f"executorch / onnxruntime (p50): fp32 {ratio['fp32']:.2f}, int8 {ratio['int8']:.2f}")


if __name__ == "__main__":
    main()
