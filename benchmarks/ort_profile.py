"""ONNX Runtime's profiler read per op type: where a model's kernel time goes.

Used by bench_int8.py (the FP32-vs-INT8 breakdown of issue 22) and host_roofline.py (kernel
rates). A profiled session writes one JSON trace; each node run is a ``"cat": "Node"`` event
named ``<node>_kernel_time`` with ``args.op_name`` and ``dur`` in microseconds. ``dur`` is the
node's time on the thread that runs the graph, with the intra-op pool's work inside it: with
the sequential executor, the kernel times of one run add up to about that run's wall time.

Per node, the median over the profiled runs is taken, then summed per op type: on a shared
machine one preempted run would otherwise dominate a mean of microsecond kernels.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import onnxruntime as ort

Key = TypeVar("Key")  # how the caller names its sessions

# The op types that do a model's multiply-accumulates (convolutions and matrix products), in
# the forms ORT's CPU provider runs them after its graph optimizations: float, integer and
# Q/DQ-fused (QLinear*), dynamically quantized, and its fused contrib kernels. Everything else
# (quantize/dequantize, activations, pooling, elementwise, layout reorders and transposes) is
# the time "outside conv/matmul" that issue 22 is about.
COMPUTE_OPS = frozenset({
    "Conv", "FusedConv", "NhwcFusedConv", "ConvTranspose",
    "QLinearConv", "ConvInteger", "NhwcConv",
    "MatMul", "FusedMatMul", "Gemm", "FusedGemm",
    "MatMulInteger", "QLinearMatMul", "MatMulIntegerToFloat", "DynamicQuantizeMatMul",
    "QGemm", "MatMulNBits",
})  # fmt: skip


@dataclass(frozen=True)
class OpBreakdown:
    """Kernel milliseconds per run and node count, per op type, over ``runs`` profiled runs."""

    runs: int
    ms: dict[str, float]
    nodes: dict[str, int]
    run_ms: float  # median wall time of a profiled run (ORT's model_run event)

    @property
    def total_ms(self) -> float:
        return sum(self.ms.values())

    @property
    def compute_ms(self) -> float:
        return sum(ms for op, ms in self.ms.items() if op in COMPUTE_OPS)

    @property
    def outside_share(self) -> float:
        """The share of kernel time spent outside conv/matmul (0 when nothing ran)."""
        total = self.total_ms
        return (total - self.compute_ms) / total if total else 0.0

    def ranked(self) -> list[tuple[str, float, int]]:
        """(op type, ms per run, nodes), most time first."""
        return sorted(((op, ms, self.nodes[op]) for op, ms in self.ms.items()),
                      key=lambda t: -t[1])  # fmt: skip

    def as_json(self) -> dict:
        return {
            "runs": self.runs,
            "kernel_ms_per_run": {op: round(ms, 4) for op, ms, _ in self.ranked()},
            "nodes": {op: n for op, _, n in self.ranked()},
            "total_kernel_ms": round(self.total_ms, 4),
            "compute_kernel_ms": round(self.compute_ms, 4),
            "outside_conv_matmul_share": round(self.outside_share, 4),
            "profiled_run_ms": round(self.run_ms, 4),
        }


def parse_profile(events: list[dict], runs: int) -> OpBreakdown:
    """The breakdown of the last ``runs`` model runs in a profile's events (earlier runs are
    warm-up). Nodes are told apart by their index in the optimized graph."""
    starts = sorted((e["ts"], e["dur"]) for e in events if e.get("name") == "model_run")
    if len(starts) < runs or runs < 1:
        raise ValueError(f"the profile holds {len(starts)} model runs, {runs} were asked for")
    first = starts[-runs][0]
    durs: dict[str, list[float]] = defaultdict(list)
    node_op: dict[str, str] = {}
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time") or e["ts"] < first:
            continue
        key = e["args"].get("node_index", e["name"])
        node_op[key] = e["args"]["op_name"]
        durs[key].append(e["dur"] / 1e3)
    ms: dict[str, float] = defaultdict(float)
    nodes: dict[str, int] = defaultdict(int)
    for key, times in durs.items():
        ms[node_op[key]] += statistics.median(times)
        nodes[node_op[key]] += 1
    run_ms = statistics.median(d / 1e3 for _, d in starts[-runs:])
    return OpBreakdown(runs, dict(ms), dict(nodes), run_ms)


def benchmark_session(
    model: str | bytes, threads: int, profile_prefix: str | Path | None = None
) -> ort.InferenceSession:
    """A CPU session as every benchmark here makes it: ``threads`` intra-op threads that do not
    spin (ORT's pool threads spin after each run by default; with sessions taking turns on two
    cores, one session's spinning threads would steal the next one's time), all graph
    optimizations, and a profile under ``profile_prefix`` when one is given."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = str(profile_prefix)
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def profiled_session(model: str | bytes, threads: int, prefix: Path) -> ort.InferenceSession:
    """A benchmark session profiling into ``prefix``_<date and time to the ms>.json (in the cwd
    unless the prefix has a folder; give each session of one `profile` call its own prefix)."""
    return benchmark_session(model, threads, prefix)


def profile(
    sessions: dict[Key, tuple[ort.InferenceSession, dict[str, np.ndarray]]],
    runs: int,
    warmup: int = 5,
) -> dict[Key, OpBreakdown]:
    """Run each profiling session ``warmup`` + ``runs`` times, round-robin (each round runs
    every session once, so a busy spell of the machine hits them alike), then read and delete
    their traces."""
    for _ in range(warmup + runs):
        for session, feed in sessions.values():
            session.run(None, feed)
    paths = {name: Path(session.end_profiling()) for name, (session, _) in sessions.items()}
    try:
        if len(set(paths.values())) < len(paths):  # ORT names a trace by prefix and time (ms)
            raise ValueError("profiled sessions share a trace file: give each its own prefix")
        return {name: parse_profile(json.loads(path.read_text()), runs)
                for name, path in paths.items()}  # fmt: skip
    finally:
        for path in paths.values():
            path.unlink(missing_ok=True)
