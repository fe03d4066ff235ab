"""A kit's golden data: every case written, batch over 1, and the same bytes every export."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from edgegate.exporters.tensorrt import KitPart, ShapeRange, write_kit
from edgegate.targets.tensorrt import kit_tolerance


def _kit(directory: Path) -> dict:
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Sigmoid()).eval()
    cases = (
        (torch.linspace(-1, 1, 32).reshape(8, 4),),
        (torch.linspace(0, 1, 12).reshape(3, 4),),
    )
    part = KitPart(
        "model", "model.onnx", module, (torch.zeros(1, 4),), ["x"], ["gate_prob"],
        [ShapeRange("x", (1, 4), (1, 4), (8, 4))], gate_outputs=frozenset({"gate_prob"}),
        samples=cases,
    )  # fmt: skip
    return write_kit(directory, "toy", "fp32", [part], kit_tolerance("fp32"), plugins=False)


def _hashes(directory: Path, files: list[str]) -> dict[str, str]:
    return {f: hashlib.sha256((directory / f).read_bytes()).hexdigest() for f in files}


def test_golden_cases_are_written_and_run_by_build_sh(tmp_path):
    written = _kit(tmp_path)
    golden = json.loads((tmp_path / "golden" / "golden.json").read_text())
    cases = golden["parts"][0]["cases"]
    assert [c["inputs"][0]["shape"] for c in cases] == [[8, 4], [3, 4]]
    assert cases[0]["outputs"][0]["gate"] and golden["tolerance"]["min_gate_agreement"] == 99.5
    assert written["record"]["golden_cases"] == {"model": [[[8, 4]], [[3, 4]]]}
    script = (tmp_path / "build.sh").read_text()
    assert "--shapes=x:8x4 --loadInputs=x:golden/model.0.x.bin" in script
    assert "--exportOutput=golden/model.1.trt.json" in script
    assert "--shapes=x:1x4" in script  # timing at the deployed batch


def test_the_same_model_and_cases_write_the_same_bytes(tmp_path):
    first, second = _kit(tmp_path / "a"), _kit(tmp_path / "b")
    assert first["files"] == second["files"]
    assert _hashes(tmp_path / "a", first["files"]) == _hashes(tmp_path / "b", second["files"])


def test_a_tolerance_without_validates_rules_is_refused(tmp_path):
    with pytest.raises(ValueError, match="gate_threshold"):
        write_kit(tmp_path, "toy", "fp32", [], {"max_abs_rel": 1e-2}, plugins=False)
