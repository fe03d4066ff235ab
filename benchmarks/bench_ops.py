"""Naive (recurrent) vs chunked timing for the gated scans on CPU.

    .venv/bin/python benchmarks/bench_ops.py --T 1024 --H 4 --K 64 --V 64 --threads 2

Runs are interleaved (naive, chunked, naive, ...) so that load from other processes
hits both forms alike; the reported figure is the median over --repeats.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from edgegate.ops import (
    chunk_gated_delta_rule,
    chunk_gated_linear_attention,
    naive_gated_delta_rule,
    naive_gated_linear_attention,
)


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def compare(
    name: str,
    naive: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    chunk: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    repeats: int,
    warmup: int,
) -> dict[str, float | str]:
    for _ in range(warmup):
        naive()
        chunk()
    t_naive, t_chunk = [], []
    for _ in range(repeats):
        t_naive.append(_timed(naive))
        t_chunk.append(_timed(chunk))
    (o_n, s_n), (o_c, s_c) = naive(), chunk()
    med_n, med_c = statistics.median(t_naive), statistics.median(t_chunk)
    return {
        "op": name,
        "naive_ms": med_n,
        "chunk_ms": med_c,
        "speedup": med_n / med_c,
        "naive_min_ms": min(t_naive),
        "chunk_min_ms": min(t_chunk),
        "max_abs_diff_out": (o_n - o_c).abs().max().item(),
        "max_abs_diff_state": (s_n - s_c).abs().max().item(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--T", type=int, default=1024)
    ap.add_argument("--H", type=int, default=4)
    ap.add_argument("--K", type=int, default=64)
    ap.add_argument("--V", type=int, default=64)
    ap.add_argument("--B", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--chunk-size", type=int, default=64)
    ap.add_argument("--scalar-gate", action="store_true", help="GLA with [B,T,H] gates")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    B, T, H, K, V, C = a.B, a.T, a.H, a.K, a.V, a.chunk_size
    q = torch.randn(B, T, H, K)
    k = torch.randn(B, T, H, K)
    v = torch.randn(B, T, H, V)
    # GLA's gate: logsigmoid(Wx) / 16; Gated DeltaNet's: -exp(A) softplus(.), beta sigmoid.
    g_gla = F.logsigmoid(torch.randn(B, T, H) if a.scalar_gate else torch.randn(B, T, H, K)) / 16
    g_gdn = -F.softplus(torch.randn(B, T, H))
    beta = torch.sigmoid(torch.randn(B, T, H))
    k_unit = F.normalize(k, dim=-1)

    results = []
    with torch.inference_mode():
        results.append(
            compare(
                "gated_linear_attention",
                lambda: naive_gated_linear_attention(q, k, v, g_gla),
                lambda: chunk_gated_linear_attention(q, k, v, g_gla, chunk_size=C),
                a.repeats,
                a.warmup,
            )
        )
        results.append(
            compare(
                "gated_delta_rule",
                lambda: naive_gated_delta_rule(q, k_unit, v, g_gdn, beta),
                lambda: chunk_gated_delta_rule(q, k_unit, v, g_gdn, beta, chunk_size=C),
                a.repeats,
                a.warmup,
            )
        )

    config = {
        "B": B,
        "T": T,
        "H": H,
        "K": K,
        "V": V,
        "chunk_size": C,
        "threads": a.threads,
        "repeats": a.repeats,
        "gate": "scalar" if a.scalar_gate else "vector",
        "torch": torch.__version__,
    }
    if a.json:
        print(json.dumps({"config": config, "results": results}, indent=2))
        return
    print(" ".join(f"{key}={val}" for key, val in config.items()))
    print(f"{'op':<24}{'naive ms':>10}{'chunk ms':>10}{'speedup':>9}{'max|diff|':>11}")
    for r in results:
        print(
            f"{r['op']:<24}{r['naive_ms']:>10.2f}{r['chunk_ms']:>10.2f}"
            f"{r['speedup']:>8.1f}x{r['max_abs_diff_out']:>11.2e}"
        )


if __name__ == "__main__":
    main()
