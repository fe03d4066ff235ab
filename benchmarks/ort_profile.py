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
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import onnx
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
    # conv kernel ms per run and nodes by kind (depthwise, 1x1, spatial, grouped), when the
    # optimized graph was at hand: INT8 and FP32 kernels differ most by kind
    conv_ms: dict[str, float] = field(default_factory=dict)
    conv_nodes: dict[str, int] = field(default_factory=dict)

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
            "conv_kernel_ms_by_kind": {k: round(ms, 4) for k, ms in self.conv_ms.items()},
            "conv_nodes_by_kind": dict(self.conv_nodes),
        }


CONV_OPS = frozenset({"Conv", "FusedConv", "NhwcFusedConv", "QLinearConv", "ConvInteger",
                      "NhwcConv"})  # fmt: skip


def conv_kinds(model: onnx.ModelProto) -> dict[str, str]:
    """{node name: kind} for the convolutions of an ORT-optimized graph, whose node names are
    the profile's. Kinds: ``depthwise`` (one input channel per group), ``grouped``, ``1x1`` and
    ``spatial`` (a dense kxk conv, such as an image stem). ORT rewrites convs into NCHWc,
    channels-last and QLinear forms, all of which keep ``group`` and ``kernel_shape``."""
    weights = {i.name: list(i.dims) for i in model.graph.initializer}
    kinds = {}
    for node in model.graph.node:
        if node.op_type not in CONV_OPS:
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        w = weights.get(node.input[3] if node.op_type == "QLinearConv" else node.input[1], [])
        kernel = list(attrs.get("kernel_shape", w[2:]))
        if attrs.get("group", 1) > 1:
            kinds[node.name] = "depthwise" if len(w) > 1 and w[1] == 1 else "grouped"
        else:
            kinds[node.name] = "1x1" if kernel and all(k == 1 for k in kernel) else "spatial"
    return kinds


def parse_profile(
    events: list[dict], runs: int, kinds: dict[str, str] | None = None
) -> OpBreakdown:
    """The breakdown of the last ``runs`` model runs in a profile's events (earlier runs are
    warm-up). Nodes are told apart by their index in the optimized graph; ``kinds`` (from
    `conv_kinds`) splits the conv time by kind."""
    starts = sorted((e["ts"], e["dur"]) for e in events if e.get("name") == "model_run")
    if len(starts) < runs or runs < 1:
        raise ValueError(f"the profile holds {len(starts)} model runs, {runs} were asked for")
    first = starts[-runs][0]
    durs: dict[str, list[float]] = defaultdict(list)
    node_op: dict[str, str] = {}
    node_name: dict[str, str] = {}
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time") or e["ts"] < first:
            continue
        key = e["args"].get("node_index", e["name"])
        node_op[key] = e["args"]["op_name"]
        node_name[key] = e["name"].removesuffix("_kernel_time")
        durs[key].append(e["dur"] / 1e3)
    ms: dict[str, float] = defaultdict(float)
    nodes: dict[str, int] = defaultdict(int)
    conv_ms: dict[str, float] = defaultdict(float)
    conv_nodes: dict[str, int] = defaultdict(int)
    for key, times in durs.items():
        ms[node_op[key]] += statistics.median(times)
        nodes[node_op[key]] += 1
        kind = (kinds or {}).get(node_name[key])
        if kind is not None:
            conv_ms[kind] += statistics.median(times)
            conv_nodes[kind] += 1
    run_ms = statistics.median(d / 1e3 for _, d in starts[-runs:])
    return OpBreakdown(runs, dict(ms), dict(nodes), run_ms, dict(conv_ms), dict(conv_nodes))


def benchmark_session(
    model: str | bytes, threads: int, profile_prefix: str | Path | None = None
) -> ort.InferenceSession:
    """A CPU session as every benchmark here makes it: ``threads`` intra-op threads that do not
    spin (ORT's pool threads spin after each run by default; with sessions taking turns on two
    cores, one session's spinning threads would steal the next one's time), all graph
    optimizations, and a profile under ``profile_prefix`` when one is given, with the optimized
    graph beside it (``<prefix>_optimized.onnx``, for `conv_kinds`)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = str(profile_prefix)
        options.optimized_model_filepath = f"{profile_prefix}_optimized.onnx"
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
    graphs = {name: Path(session.get_session_options().optimized_model_filepath)
              for name, (session, _) in sessions.items()}  # fmt: skip
    try:
        if len(set(paths.values())) < len(paths):  # ORT names a trace by prefix and time (ms)
            raise ValueError("profiled sessions share a trace file: give each its own prefix")
        return {name: parse_profile(json.loads(path.read_text()), runs, _kinds(graphs[name]))
                for name, path in paths.items()}  # fmt: skip
    finally:
        for path in [*paths.values(), *graphs.values()]:
            if path.name:
                path.unlink(missing_ok=True)


def _kinds(graph: Path) -> dict[str, str]:
    """The conv kinds of a session's optimized graph, or none when it was not written."""
    if not graph.name or not graph.is_file():
        return {}
    return conv_kinds(onnx.load(str(graph), load_external_data=False))
