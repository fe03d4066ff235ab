"""Host roofline: the FP32 and INT8 multiply-accumulate rates ONNX Runtime reaches on this CPU.

Usage: .venv/bin/python benchmarks/host_roofline.py [--threads 2 --runs 20] [--json-out r.json]

Two compute-bound problems, each in FP32 and in INT8 as edgegate's ``onnxruntime`` profile
runs it (u8 activations, s8 weights, per-channel weight scales on the convolution):

- ``conv1x1``: a 1x1 convolution, 512 -> 512 channels at 56x56 (0.82 G MACs), the pointwise
  convolutions that hold most of a MobileNet's MACs (Conv vs QLinearConv);
- ``matmul``: a 1024 x 1024 x 1024 matrix product (1.07 G MACs; MatMul vs QLinearMatMul).

Each rate is MACs over the median kernel time of the conv/matmul node in ORT's profiler, so
layout reorders and transposes around it are left out; the four sessions run round-robin, so
that a busy spell of a shared machine hits them alike. The host's rate per precision is the
best of the two problems: the ceiling any model's conv/matmul time can approach. Their ratio,
INT8 over FP32, is the most an INT8 model can gain over FP32 where its layers are compute bound.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling modules, however loaded
from ort_profile import profile, profiled_session  # noqa: E402

OPSET = [helper.make_opsetid("", 17)]
U8 = TensorProto.UINT8
RUNS = 20  # profiled runs per problem and precision


@dataclass(frozen=True)
class Problem:
    """One compute-bound problem at its size: its ONNX model per precision and its input."""

    name: str
    macs: int
    models: dict[str, onnx.ModelProto]
    feeds: dict[str, dict[str, np.ndarray]]


def _init(name: str, value: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(value, name)


def _model(nodes, inputs, output: str, out_type: int, inits) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "roofline", inputs, [helper.make_tensor_value_info(output, out_type, None)], inits
    )
    return helper.make_model(graph, opset_imports=OPSET)


def _int8_params(rng: np.random.Generator, k: int, out: int) -> tuple[np.ndarray, float]:
    """s8 weights [out, k] and an output scale for x and w scales of 0.02: a sum of k products
    of spread about 1.1 each is mapped to +-3 of its standard deviations (speed does not depend
    on it; it keeps the u8 output meaningful)."""
    w = rng.integers(-127, 128, size=(out, k), dtype=np.int8)
    return w, float(3 * 1.1 * np.sqrt(k) / 128)


def conv1x1(channels: int = 512, side: int = 56, seed: int = 0) -> Problem:
    """1x1 convolution ``channels`` -> ``channels`` on [1, channels, side, side]."""
    rng = np.random.default_rng(seed)
    shape = [1, channels, side, side]
    wf = rng.standard_normal((channels, channels, 1, 1)).astype(np.float32) * 0.05
    fp32 = _model(
        [helper.make_node("Conv", ["x", "w"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        "y", TensorProto.FLOAT, [_init("w", wf)],
    )  # fmt: skip
    w8, y_scale = _int8_params(rng, channels, channels)
    inits = [
        _init("w", w8.reshape(channels, channels, 1, 1)),
        _init("xs", np.float32(0.02)), _init("xz", np.uint8(128)),
        _init("ws", np.full(channels, 0.02, np.float32)), _init("wz", np.zeros(channels, np.int8)),
        _init("ys", np.float32(y_scale)), _init("yz", np.uint8(128)),
    ]  # fmt: skip
    int8 = _model(
        [helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"])],
        [helper.make_tensor_value_info("x", U8, shape)], "y", U8, inits,
    )  # fmt: skip
    feeds = {
        "fp32": {"x": rng.standard_normal(shape).astype(np.float32)},
        "int8": {"x": rng.integers(0, 256, size=shape, dtype=np.uint8)},
    }
    macs = channels * channels * side * side
    return Problem("conv1x1", macs, {"fp32": fp32, "int8": int8}, feeds)


def matmul(n: int = 1024, seed: int = 0) -> Problem:
    """[n, n] x [n, n] with the right-hand side constant (a layer's weights)."""
    rng = np.random.default_rng(seed)
    wf = rng.standard_normal((n, n)).astype(np.float32) * 0.05
    fp32 = _model(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, n])],
        "y", TensorProto.FLOAT, [_init("w", wf)],
    )  # fmt: skip
    w8, y_scale = _int8_params(rng, n, n)
    inits = [
        _init("w", np.ascontiguousarray(w8.T)),
        _init("xs", np.float32(0.02)), _init("xz", np.uint8(128)),
        _init("ws", np.float32(0.02)), _init("wz", np.int8(0)),
        _init("ys", np.float32(y_scale)), _init("yz", np.uint8(128)),
    ]  # fmt: skip
    int8 = _model(
        [helper.make_node("QLinearMatMul", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"])],
        [helper.make_tensor_value_info("x", U8, [n, n])], "y", U8, inits,
    )  # fmt: skip
    feeds = {
        "fp32": {"x": rng.standard_normal((n, n)).astype(np.float32)},
        "int8": {"x": rng.integers(0, 256, size=(n, n), dtype=np.uint8)},
    }
    return Problem("matmul", n**3, {"fp32": fp32, "int8": int8}, feeds)


def measure(threads: int, runs: int, problems: list[Problem] | None = None) -> dict:
    """Each problem's FP32 and INT8 rate (MAC/s: MACs over the median kernel time of its
    conv/matmul node, all problems profiled round-robin), the host's best per precision, and
    their ratio."""
    problems = [conv1x1(), matmul()] if problems is None else problems
    with tempfile.TemporaryDirectory(prefix="edgegate-roofline-") as tmp:
        sessions = {
            (p.name, precision): (
                profiled_session(
                    model.SerializeToString(), threads, Path(tmp) / f"{p.name}_{precision}"
                ),
                p.feeds[precision],
            )
            for p in problems
            for precision, model in p.models.items()
        }
        kernels = profile(sessions, runs, warmup=3)
    rates: dict[str, dict[str, float]] = {"fp32": {}, "int8": {}}
    for p in problems:
        for precision in rates:
            compute_ms = kernels[(p.name, precision)].compute_ms
            if compute_ms <= 0:
                raise RuntimeError(f"ORT ran no conv/matmul kernel for {p.name} {precision}")
            rates[precision][p.name] = p.macs / (compute_ms / 1e3)
    fp32, int8 = max(rates["fp32"].values()), max(rates["int8"].values())
    return {
        "threads": threads,
        "runs": runs,
        "problems": {
            p.name: {"macs": p.macs, **{f"{k}_mac_s": v[p.name] for k, v in rates.items()}}
            for p in problems
        },  # fmt: skip
        "fp32_mac_s": fp32,
        "int8_mac_s": int8,
        "int8_over_fp32": int8 / fp32,
    }


def summary(result: dict) -> str:
    """One line per problem, then the host's rates and their ratio, in G MAC/s."""
    lines = [f"host roofline (ONNX Runtime kernels, {result['threads']} threads, median of "
             f"{result['runs']} runs), G MAC/s:"]  # fmt: skip
    for name, p in result["problems"].items():
        lines.append(f"  {name:8} {p['macs'] / 1e9:5.2f} G MACs  fp32 {p['fp32_mac_s'] / 1e9:7.1f}"
                     f"  int8 {p['int8_mac_s'] / 1e9:7.1f}  int8/fp32 "
                     f"{p['int8_mac_s'] / p['fp32_mac_s']:5.2f}")  # fmt: skip
    best = result["fp32_mac_s"] / 1e9, result["int8_mac_s"] / 1e9, result["int8_over_fp32"]
    lines.append("  best     fp32 {:.1f}, int8 {:.1f}: int8/fp32 {:.2f}".format(*best))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=RUNS)
    ap.add_argument("--json-out", type=Path)
    a = ap.parse_args()
    result = measure(a.threads, a.runs)
    result["host"] = f"{platform.machine()} {platform.processor() or ''}".strip()
    print(summary(result))
    if a.json_out:
        a.json_out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
