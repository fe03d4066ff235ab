"""The integer gate forms of benchmarks/probe_int8_gate_forms.py: they build, ORT runs them as
integer kernels only, and their u8 outputs match the fake-quant arithmetic they stand for.

Small shapes, one thread: what is checked here is arithmetic and ORT's kernel choice, not speed.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
INTEGER_OPS = {"QLinearAdd", "QLinearMul", "QLinearConv", "QLinearGlobalAveragePool"}


@pytest.fixture(scope="module")
def probe():
    path = REPO / "benchmarks" / "probe_int8_gate_forms.py"
    spec = importlib.util.spec_from_file_location("probe_int8_gate_forms", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("probe_int8_gate_forms", module)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("form", ["qlinear_add_mul", "qdq_add_mul_fused"])
def test_hswish_integer_forms_exact(probe, form, tmp_path):
    # 16 x 8 x 8 holds every u8 code: the staged arithmetic is matched bit for bit, today's
    # float form within the one step the 8-bit gate's own rounding adds
    built = probe.build_hswish(form, 16, 8)
    assert built.exact["staged"]["max"] == 0
    assert built.exact["today"]["max"] <= 1
    ops = probe.kernel_profile(built, 1, 2, tmp_path)
    assert set(ops) <= INTEGER_OPS, f"float kernels left: {set(ops) - INTEGER_OPS}"


@pytest.mark.parametrize(
    ("form", "staged"), [("qgap_bias_folded", "staged"), ("qgap_qlinear_add", "staged_add")]
)
def test_se_integer_forms_exact(probe, form, staged, tmp_path):
    built = probe.build_se(form, 72, 24, 7)
    assert built.exact[staged]["max"] == 0
    assert built.exact["today"]["max"] <= 1
    ops = set(probe.kernel_profile(built, 1, 2, tmp_path)) - {"Transpose"}  # NHWC layout only
    assert ops <= INTEGER_OPS, f"float kernels left: {ops - INTEGER_OPS}"


def test_today_form_runs_float_ops(probe, tmp_path):
    # the baseline really is the float detour the integer forms remove
    ops = probe.kernel_profile(probe.build_hswish("today_dq_hsig_mul_q", 16, 8), 1, 2, tmp_path)
    assert {"DequantizeLinear", "HardSigmoid", "Mul", "QuantizeLinear"} <= set(ops)


def test_exactness_measure_sees_one_step(probe):
    # the folded SE gate rounds once where today's rounds twice: the two references differ,
    # so a comparison against the wrong one would fail
    case = probe.SeCase(72, 24)
    x = np.random.default_rng(1).integers(0, 256, (1, 72, 7, 7)).astype(np.uint8)
    assert probe.steps(case.staged_ref(x), case.today_ref(x))["max"] == 1
