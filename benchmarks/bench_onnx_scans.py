"""ONNX latency of the gated scans: lowered LinearAttention vs the Scan fallback vs PyTorch.

Usage: .venv/bin/python benchmarks/bench_onnx_scans.py [--T 1024 --H 4 --K 64 --V 64 --threads 2]

All three forms run in this one process on the same inputs, so the ratios are comparable
even on a noisy shared machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from edgegate.exporters.onnx import export_onnx
from edgegate.ops import gated_delta_rule, gated_linear_attention


class GLA(nn.Module):
    def forward(self, q, k, v, g):
        return gated_linear_attention(q, k, v, g)


class DeltaRule(nn.Module):
    def forward(self, q, k, v, g, beta):
        return gated_delta_rule(q, k, v, g, beta)


def _inputs(op: str, B: int, T: int, H: int, K: int, V: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(B, T, H, K, generator=gen)
    k = torch.nn.functional.normalize(torch.randn(B, T, H, K, generator=gen), dim=-1)
    v = torch.randn(B, T, H, V, generator=gen)
    if op.startswith("gla"):
        shape = (B, T, H, K) if op == "gla_vector_gate" else (B, T, H)
        g = torch.nn.functional.logsigmoid(torch.randn(*shape, generator=gen)) / 16
        return q, k, v, g
    g = -torch.rand(B, T, H, generator=gen) * 0.1
    beta = torch.rand(B, T, H, generator=gen)
    return q, k, v, g, beta


def _median_ms(fn: Callable[[], object], runs: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--B", type=int, default=1)
    ap.add_argument("--T", type=int, default=1024)
    ap.add_argument("--H", type=int, default=4)
    ap.add_argument("--K", type=int, default=64)
    ap.add_argument("--V", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for op, module in (
            ("gla_vector_gate", GLA()),
            ("gla_scalar_gate", GLA()),
            ("gated_delta_rule", DeltaRule()),
        ):
            args = _inputs(op, a.B, a.T, a.H, a.K, a.V)
            names = ["q", "k", "v", "g", "beta"][: len(args)]
            # Batch and time vary; heads and head dims stay static so lowering can see them.
            dynamic = tuple({0: torch.export.Dim.AUTO, 1: torch.export.Dim.AUTO} for _ in args)
            feed = {n: t.numpy() for n, t in zip(names, args, strict=True)}
            timings = {}
            outputs = {}
            for form, lower in (("scan_fallback", None), ("lowered", "onnxruntime")):
                path = export_onnx(
                    module, args, Path(tmp) / f"{op}_{form}.onnx", lower=lower,
                    input_names=names, output_names=["o", "state"], dynamic_shapes=dynamic,
                )  # fmt: skip
                session = _session(path, a.threads)
                outputs[form] = session.run(["o"], feed)[0]
                runs = max(3, a.runs // 4) if form == "scan_fallback" else a.runs
                timings[form] = _median_ms(lambda s=session, f=feed: s.run(None, f), runs)
            with torch.no_grad():
                reference = module(*args)[0].numpy()
                timings["torch_chunked"] = _median_ms(lambda m=module, x=args: m(*x), a.runs)
            rows.append(
                {
                    "op": op,
                    **{f"{k}_ms": round(v, 3) for k, v in timings.items()},
                    "fallback_over_lowered": round(
                        timings["scan_fallback"] / timings["lowered"], 1
                    ),
                    "torch_over_lowered": round(timings["torch_chunked"] / timings["lowered"], 1),
                    "max_abs_err_lowered": float(np.abs(outputs["lowered"] - reference).max()),
                    "max_abs_err_fallback": float(
                        np.abs(outputs["scan_fallback"] - reference).max()
                    ),
                }
            )
    header = f"B={a.B} T={a.T} H={a.H} K={a.K} V={a.V} threads={a.threads} (median ms)"
    if a.json:
        print(json.dumps({"config": header, "rows": rows}, indent=2))
        return
    print(header)
    print(
        f"{'op':18} {'lowered':>9} {'fallback':>9} {'torch':>9} {'fallback/lowered':>17} {'err':>9}"
    )
    for r in rows:
        print(
            f"{r['op']:18} {r['lowered_ms']:9.3f} {r['scan_fallback_ms']:9.3f} "
            f"{r['torch_chunked_ms']:9.3f} {r['fallback_over_lowered']:16.1f}x "
            f"{r['max_abs_err_lowered']:9.1e}"
        )


if __name__ == "__main__":
    main()
