"""The kit's compare.py, as the device runs it: Python and numpy, trtexec's JSON files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgegate.targets import get_target


@pytest.fixture(scope="module")
def kit(tmp_path_factory) -> Path:
    from edgegate.pipeline.export import export

    out = tmp_path_factory.mktemp("kit") / "hgrn"
    export("hgrn-lm:depth=1,dim=32,heads=2", out, target="tensorrt", seq_len=16)
    return out


def _engine_outputs(kit: Path, scale: float = 0.0) -> None:
    """Write golden/model.trt.json as trtexec --exportOutput would, from ONNX Runtime."""
    golden = json.loads((kit / "golden" / "golden.json").read_text())
    part = golden["parts"][0]
    feed = {
        i["name"]: np.fromfile(kit / "golden" / i["file"], dtype=i["dtype"]).reshape(i["shape"])
        for i in part["inputs"]
    }
    with get_target("tensorrt").runner(kit / "model.onnx") as runner:
        outputs = runner.run(feed)
    records = []
    for name, value in outputs.items():
        value = value + scale * np.abs(value).max()
        dims = "x".join(str(d) for d in value.shape)
        records.append({"name": name, "dimensions": dims, "values": value.ravel().tolist()})
    (kit / "golden" / "model.trt.json").write_text(json.dumps(records))
    times = [{"latencyMs": 1.0 + i / 100, "computeMs": 0.9} for i in range(100)]
    (kit / "golden" / "model.times.json").write_text(json.dumps(times))


def _compare(kit: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(kit / "compare.py"), str(kit)],
                          capture_output=True, text=True)  # fmt: skip


def test_matching_engine_outputs_pass(kit):
    _engine_outputs(kit)
    proc = _compare(kit)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "PASS"
    results = json.loads((kit / "results.json").read_text())
    latency = results["parts"]["model"]["latency_ms"]
    assert results["passed"] and latency["runs"] == 100
    assert (latency["p50"], latency["p99"]) == (pytest.approx(1.49), pytest.approx(1.98))


def test_engine_outputs_off_by_a_tenth_fail(kit):
    _engine_outputs(kit, scale=0.1)
    proc = _compare(kit)
    assert proc.returncode == 1
    assert proc.stdout.strip().splitlines()[-1].startswith("FAIL: model.logits: max abs")


def test_a_missing_engine_output_file_is_its_own_failure(kit):
    (kit / "golden" / "model.trt.json").unlink(missing_ok=True)
    proc = _compare(kit)
    assert proc.returncode == 2 and "model.trt.json is missing" in proc.stdout
