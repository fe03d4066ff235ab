"""Shared test helpers: run the CLI in-process and check the one-line error contract."""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
import torch

from edgegate.cli import main

torch.set_num_threads(2)

REPO = Path(__file__).resolve().parents[1]


def load_benchmark(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` as a module (benchmarks are scripts, not a package), loaded
    once per test session so its tests and the tests that reuse its helpers share it."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses in the script look their module up while loading
    spec.loader.exec_module(module)
    return module


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)


@pytest.fixture
def run_cli(capsys):
    def run(*args: str) -> CliResult:
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def assert_one_line_error(result: CliResult, *fragments: str, code: int = 2) -> None:
    assert result.code == code, (result.code, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


MOBILENET_INT8_CALIB = 64


@pytest.fixture(scope="session")
def mobilenet_int8(tmp_path_factory):
    """`edgegate quantize mobilenet-v3-se` for this host's ONNX Runtime, calibrated on 64
    images: shared by the quantize and localisation tests (a quantize takes about 40 s on two
    cores). Read it; copy it before changing anything."""
    out = tmp_path_factory.mktemp("mobilenet-int8") / "export"
    args = ["quantize", "mobilenet-v3-se", "-p", "onnxruntime"]
    assert main([*args, "--calib-samples", str(MOBILENET_INT8_CALIB), "-o", str(out)]) == 0
    return out
