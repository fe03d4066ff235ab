"""Exports carry their weights' source, so `validate` rebuilds the exported model unaided."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import assert_one_line_error

SCAN_LMS = ("gla-lm", "gdn-lm", "hgrn-lm")
SMALL = "depth=1,dim=32,heads=2"  # no shipped weights: a random initialisation


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    """A few kB of text, so validation's accuracy pass stays quick."""
    path = tmp_path_factory.mktemp("text") / "sample.txt"
    path.write_bytes(bytes(range(32, 127)) * 60)
    return path


def _export_and_validate(run_cli, out, text, *extra):
    exported = run_cli("export", *extra, "--seq-len", "32", "-o", out, "--json")
    assert exported.code == 0, exported.stderr
    verdict = run_cli("validate", out, "--data", text, "--parity-samples", "64", "--json")
    assert verdict.code == 0, (verdict.stdout, verdict.stderr)
    assert verdict.json()["passed"]
    return exported.json()


@pytest.mark.parametrize("model", SCAN_LMS)
def test_shipped_weights_export_validates(run_cli, tmp_path, text, model):
    result = _export_and_validate(run_cli, tmp_path / "out", text, model)
    assert result["weights"] == "shipped"
    assert "weights.pt" not in result["files"]  # the shipped file holds them


@pytest.mark.parametrize("model", SCAN_LMS)
def test_random_init_export_stores_its_weights_and_validates(run_cli, tmp_path, text, model):
    result = _export_and_validate(run_cli, tmp_path / "out", text, f"{model}:{SMALL}")
    assert result["weights"].startswith("random init")
    assert "weights.pt" in result["files"]


@pytest.mark.parametrize("model", SCAN_LMS)
def test_checkpoint_export_validates_without_repeating_c(run_cli, tmp_path, text, model):
    from edgegate.models import build_model, save_checkpoint

    ckpt = tmp_path / "ckpt.pt"
    save_checkpoint(ckpt, build_model(f"{model}:{SMALL}"), f"{model}:{SMALL}")
    out = tmp_path / "out"
    result = _export_and_validate(run_cli, out, text, f"{model}:{SMALL}", "-c", ckpt)
    assert result["weights"] == f"checkpoint {ckpt}"
    recorded = json.loads((out / "manifest.json").read_text())["extra"]["weights_source"]
    assert recorded["source"] == "checkpoint" and recorded["sha256"]

    moved = tmp_path / "moved.pt"
    shutil.move(ckpt, moved)
    assert_one_line_error(run_cli("validate", out, "--data", text), "ckpt.pt", "pass -c")
    verdict = run_cli("validate", out, "--data", text, "-c", moved, "--json")
    assert verdict.code == 0, verdict.stderr
