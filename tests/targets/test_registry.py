"""The target registry: one module plus one registry line make a target, everywhere at once.

The toy target (tests/targets/toy.py) writes a torch.export program and runs it with PyTorch.
Registering it is the one line a new target adds to ``edgegate.targets.TARGET_MODULES``.
"""

from __future__ import annotations

import json

import pytest

from edgegate import targets
from tests.conftest import assert_one_line_error


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(targets.TARGET_MODULES, "toy", "tests.targets.toy")
    monkeypatch.setitem(targets.TARGET_MODULES, "toy-missing", "tests.targets.toy_missing")


def test_registry_names_match_their_modules():
    for name, target in targets.all_targets().items():
        assert target.name == name and target.suffix and target.summary and target.install_hint


def test_cli_choices_come_from_the_registry(run_cli, toy):
    listed = run_cli("targets", "--json")
    assert listed.code == 0, listed.stderr
    rows = {row["name"]: row for row in listed.json()}
    assert rows["toy"]["available"] and not rows["toy-missing"]["available"]
    assert rows["toy-missing"]["install"] == "pip install edgegate-toy-runtime"
    assert "toy" in run_cli("export", "--help").stdout


def test_a_new_target_exports_validates_and_benches_through_the_cli(run_cli, toy, tmp_path):
    out = tmp_path / "toy"
    exported = run_cli("export", "mobilenet-v3-se", "--target", "toy", "-o", out, "--json")
    assert exported.code == 0, exported.stderr
    assert "model.pt2" in exported.json()["files"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["target"] == "toy" and manifest["extra"]["model_file"] == "model.pt2"

    verdict = run_cli("validate", out, "--parity-samples", "32", "--json")
    assert verdict.code == 0, verdict.stderr
    assert verdict.json()["target"] == "toy" and verdict.json()["passed"]

    timed = run_cli("bench", out, "--runs", "3", "--json")
    assert timed.code == 0, timed.stderr
    assert timed.json()["runtime"] == "torch.export"


def test_a_target_whose_library_is_missing_exits_3_before_any_work(run_cli, toy, tmp_path):
    out = tmp_path / "missing"
    result = run_cli("export", "mobilenet-v3-se", "--target", "toy-missing", "-o", out)
    assert_one_line_error(
        result, "edgegate_toy_runtime", "pip install edgegate-toy-runtime", code=3
    )
    assert not out.exists()


def test_an_unknown_target_exits_2_and_lists_the_known_ones(run_cli, tmp_path):
    out = tmp_path / "x"
    result = run_cli("export", "qvit", "--target", "tflite", "-o", out)
    assert_one_line_error(result, "tflite", "onnx", "onnxruntime")
    assert not out.exists()
    with pytest.raises(Exception, match="onnxruntime"):
        targets.get_target("tflite")
