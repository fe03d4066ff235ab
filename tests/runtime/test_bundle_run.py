"""run.py (``edgegate/runtime/bundle_run.py``) with a TensorRT kit: trtexec missing is a missing
runtime, trtexec failing on the model is a toolchain failure with trtexec's own message, and
neither leaves its scratch folder behind. trtexec here is ``tests/pipeline/fake_trtexec.py``
(no TensorRT on this machine), failing as told by FAKE_TRTEXEC_ERROR; the bundle is written
by hand, so the test needs no export and runs in about a second."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgegate.runtime import bundle_run
from edgegate.runtime.bundle_run import tool_message

FAKE = Path(__file__).parents[1] / "pipeline" / "fake_trtexec.py"


@pytest.fixture
def trt_bundle(tmp_path) -> Path:
    """A one-sample bundle of a TensorRT kit whose engine is present."""
    root = tmp_path / "bundle"
    (root / "model").mkdir(parents=True)
    (root / "model" / "model.engine").write_bytes(b"engine")
    inputs = np.zeros((1, 4), np.float32)
    np.savez(root / "inputs.npz", x=inputs)
    inputs.tofile(root / "x_0.bin")
    digest = hashlib.sha256((root / "inputs.npz").read_bytes()).hexdigest()
    record = {
        "format": bundle_run.BUNDLE_FORMAT, "id": "test", "runtime": "tensorrt", "samples": 1,
        "model_file": "model/model.onnx", "model_files": ["model/model.engine"],
        "inputs": [{"name": "x", "dtype": "float32", "shape": [1, 4]}], "outputs": ["y"],
        "raw_inputs": {"0": {"x": "x_0.bin"}}, "files": {"inputs.npz": digest},
        "tensorrt": {"engine": "model/model.engine", "plugin": None, "build": "model/build.sh"},
    }  # fmt: skip
    (root / "bundle.json").write_text(json.dumps(record))
    shutil.copy(bundle_run.__file__, root / "run.py")
    return root


def _fake_trtexec(folder: Path) -> Path:
    fake = folder / "trtexec"
    fake.write_text(f'#!/bin/sh\nexec {sys.executable} {FAKE} "$@"\n')
    fake.chmod(0o755)
    return fake


def _run(bundle: Path, scratch: Path, trtexec: Path, error: str | None):
    env = {**os.environ, "TMPDIR": str(scratch)}
    env.pop("FAKE_TRTEXEC_ERROR", None)
    if error:
        env["FAKE_TRTEXEC_ERROR"] = error
    return subprocess.run(
        [sys.executable, str(bundle / "run.py"), "--trtexec", str(trtexec), "--runs", "1"],
        capture_output=True, text=True, env=env, cwd=bundle,
    )  # fmt: skip


def test_trtexec_failing_on_the_model_is_a_toolchain_failure_with_its_message(trt_bundle, tmp_path):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    done = _run(trt_bundle, scratch, _fake_trtexec(tmp_path), "IPluginCreator not found")
    assert done.returncode == 3
    lines = done.stderr.strip().splitlines()
    assert lines == [
        "error: toolchain failure: trtexec failed on model.engine (exit 1): "
        "[01/01/2025-00:00:00] [E] IPluginCreator not found"
    ]
    assert not list(scratch.iterdir())  # the edgegate-trtexec- scratch folder is gone


def test_trtexec_missing_is_a_missing_runtime(trt_bundle, tmp_path):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    done = _run(trt_bundle, scratch, tmp_path / "no-trtexec", None)
    assert done.returncode == 3
    assert done.stderr.startswith("error: runtime missing: trtexec is not found")
    assert not list(scratch.iterdir())


def test_tool_message_picks_the_error_line_not_the_banner():
    out = "&&&& RUNNING x\n[I] loading\n[E] Error Code 1: no creator\n[I] done\n&&&& FAILED x\n"
    assert tool_message(out) == "[E] Error Code 1: no creator"
    assert tool_message("[I] loading\n&&&& FAILED x\n") == "[I] loading"
    assert tool_message("") == "no output"
