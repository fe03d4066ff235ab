"""The pure parts of benchmarks/bench_int8.py: ORT's profile read per op type, the MAC count the
roofline divides, the roofline microbenchmark (benchmarks/host_roofline.py) at a tiny size, and
the roofline columns. Real ORT sessions on tiny graphs; what is checked is bookkeeping, not
speed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from tests.conftest import load_benchmark


@pytest.fixture(scope="module")
def ort_profile():
    return load_benchmark("ort_profile")


@pytest.fixture(scope="module")
def roofline():
    return load_benchmark("host_roofline")


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_int8")


def tiny_model() -> bytes:
    """x [4, 32] -> MatMul -> Abs -> Neg -> Abs: one conv/matmul node, three others, two of
    them of one op type (none of them fuse in ORT's optimizer)."""
    w = numpy_helper.from_array(np.random.default_rng(0).random((32, 64), np.float32), "w")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"]),
        helper.make_node("Abs", ["m"], ["a"]),
        helper.make_node("Neg", ["a"], ["n"]),
        helper.make_node("Abs", ["n"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return model.SerializeToString()


FEED = {"x": np.ones((4, 32), np.float32)}


def test_profile_per_op_type(ort_profile, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # ORT would write a prefix without a folder here
    traces = tmp_path / "traces"
    traces.mkdir()
    session = ort_profile.profiled_session(tiny_model(), 1, traces / "tiny")
    kernels = ort_profile.profile({"tiny": (session, FEED)}, runs=4, warmup=2)["tiny"]
    assert kernels.runs == 4
    assert kernels.nodes == {"MatMul": 1, "Abs": 2, "Neg": 1}
    assert set(kernels.ms) == set(kernels.nodes)
    assert all(ms > 0 for ms in kernels.ms.values())
    assert kernels.compute_ms == pytest.approx(kernels.ms["MatMul"])
    outside = kernels.ms["Abs"] + kernels.ms["Neg"]
    assert kernels.outside_share == pytest.approx(outside / kernels.total_ms)
    assert 0 < kernels.outside_share < 1
    assert kernels.ranked()[0][1] == max(kernels.ms.values())
    assert kernels.as_json()["nodes"]["Abs"] == 2
    # the trace is read and deleted: nothing left in its folder nor in the cwd
    assert list(traces.iterdir()) == []
    assert list(tmp_path.glob("*.json")) == []


def test_parse_takes_the_last_runs(ort_profile, tmp_path):
    session = ort_profile.profiled_session(tiny_model(), 1, tmp_path / "tiny")
    for _ in range(5):
        session.run(None, FEED)
    events = json.loads(Path(session.end_profiling()).read_text())
    assert ort_profile.parse_profile(events, 5).nodes["Abs"] == 2  # per node, not per run
    assert ort_profile.parse_profile(events, 2).runs == 2
    with pytest.raises(ValueError, match="5 model runs, 6 were asked"):
        ort_profile.parse_profile(events, 6)


def test_model_macs_by_hand(bench):
    side = 16
    module = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),  # -> 8 x 8 x 8
        nn.Conv2d(8, 8, 3, padding=1, groups=8),  # depthwise -> 8 x 8 x 8
        nn.Conv2d(8, 12, 1),  # pointwise -> 12 x 8 x 8
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(12, 10),
    ).eval()
    out = 8 * 8
    expected = (
        out * 8 * (3 * 3 * 3)  # each output element: 3 input channels x 3 x 3
        + out * 8 * (1 * 3 * 3)  # depthwise: one input channel per output channel
        + out * 12 * 8  # 1x1: 8 input channels
        + 12 * 10  # linear
    )
    assert bench.model_macs(module, torch.zeros(1, 3, side, side)) == expected


def test_roofline_tiny(roofline):
    problems = [roofline.conv1x1(channels=16, side=8), roofline.matmul(n=32)]
    assert [p.macs for p in problems] == [16 * 16 * 8 * 8, 32**3]
    result = roofline.measure(threads=1, runs=3, problems=problems)
    for p in result["problems"].values():
        assert p["fp32_mac_s"] > 0 and p["int8_mac_s"] > 0
    assert result["fp32_mac_s"] == max(p["fp32_mac_s"] for p in result["problems"].values())
    assert result["int8_over_fp32"] == pytest.approx(result["int8_mac_s"] / result["fp32_mac_s"])
    assert "int8/fp32" in roofline.summary(result)


def test_roofline_columns(bench):
    rows = [
        {"variant": "fp32", "macs": 2e9, "p50_ms": 40.0},
        {"variant": "edgegate_int8", "macs": 2e9, "p50_ms": 40.0},
    ]
    bench.add_roofline(rows, {"fp32_mac_s": 100e9, "int8_mac_s": 400e9})
    assert [r["roofline_ms"] for r in rows] == [20.0, 5.0]
    assert [r["fraction_of_roofline"] for r in rows] == [0.5, 0.125]


def conv_model() -> bytes:
    """x [1, 8, 6, 6] -> 3x3 depthwise -> 1x1 -> 3x3 dense: one conv of each kind."""
    rng = np.random.default_rng(0)
    w = lambda name, *shape: numpy_helper.from_array(rng.random(shape, np.float32), name)  # noqa: E731
    nodes = [
        helper.make_node("Conv", ["x", "dw"], ["a"], group=8, pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["a", "pw"], ["b"]),
        helper.make_node("Conv", ["b", "full"], ["y"], pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes,
        "convs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])],
        [w("dw", 8, 1, 3, 3), w("pw", 16, 8, 1, 1), w("full", 4, 16, 3, 3)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return model.SerializeToString()


def test_conv_time_split_by_kind(ort_profile, tmp_path):
    """The optimized graph ORT writes beside the trace names each conv's kind, and is deleted
    with the trace once read."""
    session = ort_profile.profiled_session(conv_model(), 1, tmp_path / "convs")
    feed = {"x": np.ones((1, 8, 6, 6), np.float32)}
    kernels = ort_profile.profile({"convs": (session, feed)}, runs=3, warmup=1)["convs"]
    assert kernels.conv_nodes == {"depthwise": 1, "1x1": 1, "spatial": 1}
    assert sum(kernels.conv_ms.values()) <= kernels.total_ms + 1e-9
    assert all(ms > 0 for ms in kernels.conv_ms.values())
    assert kernels.as_json()["conv_nodes_by_kind"]["depthwise"] == 1
    assert list(tmp_path.iterdir()) == []
