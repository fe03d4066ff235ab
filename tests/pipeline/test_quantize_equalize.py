"""`quantize --equalize` and `--weight-granularity`: refused in one line where they cannot
apply, warned about where nothing is equalizable, and end to end on mobilenet-v3-se."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from torch import nn

from edgegate.pipeline.equalization import equalization_result
from edgegate.quant.equalize import Equalization
from tests.conftest import assert_one_line_error


@pytest.mark.parametrize(
    "args, fragment",
    [
        (
            ["--profile", "executorch", "--equalize"],
            "--equalize does not apply: target 'executorch' quantizes with its own toolchain",
        ),
        (
            ["--profile", "executorch", "--weight-granularity", "tensor"],
            "--weight-granularity tensor does not apply to target 'executorch'",
        ),
        (
            ["--profile", "coreml", "--weight-granularity", "tensor"],
            "--weight-granularity tensor does not apply to target 'coreml'",
        ),
        (["--weight-granularity", "row"], "unknown weight granularity 'row'"),
    ],
)
def test_options_a_target_cannot_use_exit_2_before_any_work(run_cli, tmp_path, args, fragment):
    out = tmp_path / "out"
    result = run_cli("quantize", "mobilenet-v3-se", "-o", out, *args)
    assert_one_line_error(result, fragment)
    assert not out.exists()


def _carrying(record: Equalization) -> nn.Module:
    module = nn.Identity()
    module.equalization = record
    return module


def test_nothing_to_equalize_is_a_warning_not_a_failure():
    record = Equalization(not_homogeneous=[{"source": "a", "sink": "b", "through": "GELU"}])
    report, warnings = equalization_result(_carrying(record), "qvit")
    assert report["applied"] is False and report["not_homogeneous"]
    assert len(warnings) == 1 and "no layer pair of 'qvit' can be equalized" in warnings[0]
    undone = Equalization(regions=[{"sources": ["a"], "sinks": ["b"]}], reverted="moved by 1")
    _, warnings = equalization_result(_carrying(undone), "m")
    assert warnings == ["--equalize: moved by 1"]
    assert equalization_result(nn.Identity(), "m") == (None, [])  # not asked for


@pytest.mark.slow  # a quantize (about 60 s on 2 cores) and a validate of its export
def test_per_tensor_equalized_mobilenet_quantizes_records_and_validates(run_cli, tmp_path):
    out = tmp_path / "out"
    result = run_cli(
        "quantize", "mobilenet-v3-se", "--weight-granularity", "tensor", "--equalize",
        "--calib-samples", "16", "-o", out,
    )  # fmt: skip
    assert result.code == 0, result.stderr
    assert "equalization" in result.stdout and "one per tensor" in result.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["quant"]["weight_granularity"] == "tensor" and report["quant"]["equalize"]
    equalization = report["equalization"]
    assert equalization["applied"] and equalization["max_relative_error"] <= 1e-4
    assert equalization["summary"]["regions"] >= 10
    assert any(p["through"] == "Hardswish" for p in equalization["not_homogeneous"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["quant"]["weight_granularity"] == "tensor"
    model = onnx.load(out / "model.int8.onnx")
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    scales = [
        inits[n.input[1]].size
        for n in model.graph.node
        if n.op_type == "DequantizeLinear"
        and n.input[0] in inits
        and inits[n.input[0]].dtype == np.int8
    ]
    assert scales and set(scales) == {1}
    verdict = run_cli("validate", out, "--json")  # rebuilds the per-tensor fake-quant state
    assert verdict.code == 0, verdict.stderr
    assert verdict.json()["passed"]
