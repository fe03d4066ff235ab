"""`edgegate export --target coreml`: packages checked as far as Linux can check them.

coremltools loads each package here; its ML Program is read back (no edgegate op, flexible
lengths and sizes, int8 constexpr weights), and `edgegate validate` runs it in edgegate's numpy
emulation of the program ("emulated", since Core ML predicts on macOS only).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edgegate.manifest import read_manifest
from tests.conftest import assert_one_line_error

pytest.importorskip("coremltools", reason="coremltools not installed (pip install '.[coreml]')")

LM = ["--seq-len", "32"]
MODELS = {  # every zoo model -> extra export arguments
    "mobilenet-v3-se": [],
    "gc-mobilenet": [],
    "qvit:attention=clipped": [],
    "qvit:attention=gated": [],
    "qlm:attention=gated": LM,
    "gla-lm": LM,
    "hgrn-lm": LM,
    "gdn-lm": LM,
}
QUICK = {("gla-lm", "fp16"), ("qvit:attention=gated", "int8")}  # the rest run with -m slow


@pytest.fixture(scope="module")
def text(tmp_path_factory) -> Path:
    from edgegate.data import stdlib_text

    path = tmp_path_factory.mktemp("text") / "test.txt"
    path.write_bytes(stdlib_text("test")[:8192].numpy().tobytes())
    return path


def _cases():
    for model in MODELS:
        for precision in ("fp16", "int8"):
            marks = [] if (model, precision) in QUICK else [pytest.mark.slow]
            yield pytest.param(model, precision, marks=marks, id=f"{model}-{precision}")


def check_package(folder: Path, model: str, int8: bool) -> None:
    from edgegate.exporters.coreml.inspect import (
        int8_weight_ops,
        load,
        op_counts,
        package_ranges,
    )

    manifest = read_manifest(folder)  # every file (the package: a folder hash) as recorded
    assert manifest.target == "coreml" and manifest.custom_ops == []
    packages = [name for name in manifest.files if name.endswith(".mlpackage")]
    assert packages
    for name in packages:
        package = load(folder / name)  # coremltools loads it on Linux
        assert not [op for op in op_counts(package) if "edgegate" in op.lower()]
        if int8:
            assert int8_weight_ops(package), f"{name} holds no int8 weights"
    (tokens_or_image, *_) = manifest.inputs
    ((stem, record),) = [(s, r) for s, r in manifest.ranges.items() if s.startswith("model")]
    declared = {r["name"]: r for r in record["ranges"]}
    bounds = package_ranges(folder / f"{stem}.mlpackage")[tokens_or_image.name]
    for r in record["ranges"]:  # the package takes exactly what the manifest declares
        assert bounds[r["axis"]] == (r["min"], r["max"]), (r, bounds)
    if MODELS[model] == LM:
        assert tokens_or_image.shape[1] == "seq_len"
        assert declared["seq_len"]["min"] <= 2 and declared["seq_len"]["max"] == 32  # flexible
    elif model.startswith("qvit"):  # its learned position table fixes the image side
        assert tokens_or_image.shape[2:] == [16, 16], tokens_or_image.shape
    else:  # flexible image sizes, up to twice the export's
        assert tokens_or_image.shape[2:] == ["height", "width"], tokens_or_image.shape
        assert declared["height"]["max"] == declared["width"]["max"] == 64


@pytest.mark.parametrize("model, precision", list(_cases()))
def test_package_loads_and_validates_emulated(run_cli, tmp_path, text, model, precision):
    out = tmp_path / "pkg"
    extra = ["--int8", "--calib-samples", "32"] if precision == "int8" else []
    data = ["--data", str(text)] if MODELS[model] == LM else []
    if precision == "int8" and MODELS[model] == LM:
        extra += ["--calib-data", str(text)]
    result = run_cli("export", model, "--target", "coreml", "-o", out, *MODELS[model], *extra,
                     *data)  # fmt: skip
    assert result.code == 0, result.stderr
    check_package(out, model, int8=precision == "int8")
    verdict = run_cli("validate", out, "--parity-samples", "32", "--json", *data)
    assert verdict.code == 0, (verdict.stdout, verdict.stderr)
    assert "emulated" in verdict.json()["runtime"]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["mobilenet-v3-se", "gla-lm"])
def test_int8_package_is_at_most_40_percent_of_fp32(run_cli, tmp_path, text, model):
    from edgegate.exporters.coreml.inspect import package_size

    calib = ["--calib-data", str(text)] if MODELS[model] == LM else []
    data = ["--data", str(text)] if MODELS[model] == LM else []
    fp32, int8 = tmp_path / "fp32", tmp_path / "int8"
    assert run_cli("export", model, "-t", "coreml", "--precision", "fp32", "-o", fp32,
                   *MODELS[model]).code == 0  # fmt: skip
    assert run_cli("export", model, "-t", "coreml", "--int8", "-o", int8, *MODELS[model],
                   *calib, *data).code == 0  # fmt: skip
    ratio = package_size(int8 / "model.mlpackage") / package_size(fp32 / "model.mlpackage")
    assert ratio <= 0.40, ratio


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["gla-lm", "--seq-len", "2000"], "beyond the range"),
        (["mobilenet-v3-se", "--w8a8"], "needs calibration data"),
        (["qvit", "--precision", "bf16"], "unknown precision 'bf16'"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(run_cli, tmp_path, args, fragment):
    out = tmp_path / "pkg"
    result = run_cli("export", *args, "--target", "coreml", "-o", out)
    assert_one_line_error(result, fragment)
    assert not out.exists()


def test_a_model_with_an_op_coreml_lacks_is_refused(run_cli, tmp_path, monkeypatch):
    (tmp_path / "fftmodel.py").write_text(
        "import torch\n"
        "class FFTNet(torch.nn.Module):\n"
        "    def forward(self, x):\n"
        "        return torch.fft.rfft2(x).abs().mean((2, 3))\n"
        "def build():\n"
        "    return FFTNet()\n"
    )
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "pkg"
    result = run_cli("export", "fftmodel:build", "--trust-code", "--task", "image",
                     "--target", "coreml", "-o", out)  # fmt: skip
    assert_one_line_error(result, "Core ML cannot take")
    assert not out.exists()
