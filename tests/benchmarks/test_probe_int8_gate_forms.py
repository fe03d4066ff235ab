"""The integer gate forms of benchmarks/probe_int8_gate_forms.py: they build, ORT runs them as
integer kernels only, and their u8 outputs match the fake-quant arithmetic they stand for.

Small shapes, one thread: what is checked here is arithmetic and ORT's kernel choice, not speed.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import load_benchmark

INTEGER_OPS = {"QLinearAdd", "QLinearMul", "QLinearConv", "QLinearGlobalAveragePool"}
INTEGER_OPS |= {"QLinearSigmoid"}


def piece_ops(probe, built, tmp_path) -> set[str]:
    """The op types ORT ran for the piece, less the layout transposes at the graph's edges."""
    return set(probe.kernel_profile(built, 1, 2, tmp_path)) - {probe.EDGE_OP}


@pytest.fixture(scope="module")
def probe():
    return load_benchmark("probe_int8_gate_forms")


@pytest.mark.parametrize("form", ["qlinear_add_mul", "qdq_add_mul_fused"])
def test_hswish_integer_forms_exact(probe, form, tmp_path):
    # 16 x 8 x 8 holds every u8 code: the staged arithmetic is matched bit for bit, today's
    # float form within the one step the 8-bit gate's own rounding adds
    built = probe.build_hswish(form, 16, 8)
    assert built.exact["staged"]["max"] == 0
    # off by one only where the gate's rounding tips the output's (under 1 % of values)
    assert built.exact["today"]["max"] <= 1
    assert built.exact["today"]["share"] < 0.015
    ops = piece_ops(probe, built, tmp_path)
    assert ops <= INTEGER_OPS, f"float kernels left: {ops - INTEGER_OPS}"


@pytest.mark.parametrize(
    ("form", "staged", "from_today"),
    # folded: the excite conv rounds straight to the gate, where today's rounds z first, so
    # a gate step (1/255 of x) can move the output by up to 2 steps
    [
        ("qgap_bias_folded", "staged", (2, 0.08)),
        ("qdq_bias_folded_fused", "staged", (2, 0.08)),
        ("qgap_qlinear_add", "staged_add", (1, 0.01)),
    ],
)
def test_se_integer_forms_exact(probe, form, staged, from_today, tmp_path):
    built = probe.build_se(form, 120, 32, 7)
    assert built.exact[staged]["max"] == 0
    assert built.exact["today"]["max"] <= from_today[0]
    assert built.exact["today"]["share"] < from_today[1]
    ops = piece_ops(probe, built, tmp_path)
    assert ops <= INTEGER_OPS, f"float kernels left: {ops - INTEGER_OPS}"


def test_qlinear_sigmoid_exact(probe, tmp_path):
    built = probe.build_sigmoid("qlinear_sigmoid", 16, 8)
    assert built.exact["today"]["max"] == 0
    assert piece_ops(probe, built, tmp_path) == {"QLinearSigmoid"}


def test_today_form_runs_float_ops(probe, tmp_path):
    # the baseline really is the float detour the integer forms remove
    ops = piece_ops(probe, probe.build_hswish("today_dq_hsig_mul_q", 16, 8), tmp_path)
    assert ops == {"DequantizeLinear", "HardSigmoid", "Mul", "QuantizeLinear"}


def test_exactness_measure_sees_one_step(probe):
    # the folded SE gate rounds once where today's rounds twice: the two references differ,
    # so a comparison against the wrong one would fail
    case = probe.SeCase(72, 24)
    x = np.random.default_rng(1).integers(0, 256, (1, 72, 7, 7)).astype(np.uint8)
    assert probe.steps(case.staged_ref(x), case.today_ref(x))["max"] == 1
