"""Naive (recurrent) vs chunked timing for the gated scans on CPU.

    .venv/bin/python benchmarks/bench_ops.py --T 1024 --H 4 --K 64 --V 64 --threads 2

Runs are interleaved (naive, chunked, naive, ...) so that load from other processes
hits both forms alike. Both the best and the median run are reported: on a shared
machine the best run is the one least disturbed by other work, so the speedup is taken
from the best runs; a median far above the best means the machine was busy.

glibc malloc returns freed memory above its trim threshold to the OS, so a process can
settle into a mode where every call page-faults its ~1 MB temporaries afresh (thousands
of minor faults per call, about 3x slower chunked runs here, the naive loop's 64 KB
tensors are unaffected). Which mode a process lands in varies from run to run.
`--malloc tuned` (the default) pins the thresholds with mallopt so that runs are
comparable, as a long-running server or jemalloc/tcmalloc would; `--malloc default`
measures the allocator as it comes.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
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


def tune_malloc() -> bool:
    """Keep freed buffers in the heap (glibc only); returns whether it applied."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = libc.mallopt(m_mmap_threshold, 32 << 20) and libc.mallopt(m_trim_threshold, 1 << 30)
    except (OSError, AttributeError):
        return False
    return bool(ok)


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
        "naive_ms": min(t_naive),
        "chunk_ms": min(t_chunk),
        "speedup": min(t_naive) / min(t_chunk),
        "naive_median_ms": med_n,
        "chunk_median_ms": med_c,
        "speedup_median": med_n / med_c,
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
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--chunk-size", type=int, default=64)
    ap.add_argument("--scalar-gate", action="store_true", help="GLA with [B,T,H] gates")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--malloc", choices=["tuned", "default"], default="tuned")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    a = ap.parse_args()
    malloc = "tuned" if a.malloc == "tuned" and tune_malloc() else "default"

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
        "malloc": malloc,
        "torch": torch.__version__,
    }
    if a.json:
        print(json.dumps({"config": config, "results": results}, indent=2))
        return
    print(" ".join(f"{key}={val}" for key, val in config.items()))
    print(f"{'':<24}{'best of ' + str(a.repeats):^29}{'median':^29}")
    head = f"{'naive ms':>10}{'chunk ms':>10}{'speedup':>9}"
    print(f"{'op':<24}{head}{head}{'max|diff|':>11}")
    for r in results:
        print(
            f"{r['op']:<24}{r['naive_ms']:>10.2f}{r['chunk_ms']:>10.2f}{r['speedup']:>8.1f}x"
            f"{r['naive_median_ms']:>10.2f}{r['chunk_median_ms']:>10.2f}"
            f"{r['speedup_median']:>8.1f}x{r['max_abs_diff_out']:>11.2e}"
        )


if __name__ == "__main__":
    main()
