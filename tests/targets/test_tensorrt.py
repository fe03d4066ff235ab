"""`edgegate export --target tensorrt`: build kits checked as far as a machine without a GPU
and without TensorRT can check them (ONNX, plugin attributes, Q/DQ, build.sh, validate)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import onnx
import pytest
from onnx import numpy_helper

from edgegate.exporters.tensorrt import PLUGIN_FIELDS, PLUGIN_OPS
from edgegate.manifest import read_manifest
from edgegate.targets.tensorrt import FALLBACK_RUNTIME, fallback_reason
from tests.conftest import assert_one_line_error

LM = ["--seq-len", "32"]
MODELS = {  # spec -> extra export arguments
    "gla-lm": LM,
    "gdn-lm": LM,
    "hgrn-lm": LM,
    "qvit:attention=gated": [],
    "mobilenet-v3-se": [],
    "gc-mobilenet": [],
}
# Quick enough for every run; the CNN kits (tens of seconds each) run with -m slow.
QUICK = {
    ("gla-lm", "fp32"),
    ("gdn-lm", "fp32"),
    ("hgrn-lm", "fp32"),
    ("qvit:attention=gated", "fp32"),
    ("qvit:attention=gated", "int8"),
    ("gla-lm", "int8"),
}


@pytest.fixture(scope="module")
def text(tmp_path_factory) -> Path:
    from edgegate.data import stdlib_text

    path = tmp_path_factory.mktemp("text") / "test.txt"
    path.write_bytes(stdlib_text("test")[:8192].numpy().tobytes())
    return path


def _cases():
    for model in MODELS:
        for precision in ("fp32", "int8"):
            marks = [] if (model, precision) in QUICK else [pytest.mark.slow]
            yield pytest.param(model, precision, marks=marks, id=f"{model}-{precision}")


def check_kit(kit: Path, int8: bool) -> None:
    manifest = read_manifest(kit)  # every file present with its SHA-256
    assert manifest.target == "tensorrt"
    assert manifest.extra["tensorrt_versions"] == ["10.x", "11.x"]
    graphs = [name for name in manifest.files if name.endswith(".onnx")]
    assert graphs and set(manifest.extra["shapes"]) == {Path(g).stem for g in graphs}
    for name in graphs:
        model = onnx.load(kit / name)
        onnx.checker.check_model(model, full_check=True)
        assert max(o.version for o in model.opset_import if o.domain == "") <= 20
        assert not [f.name for f in model.functions if f.name in PLUGIN_OPS], name
        for node in (n for n in model.graph.node if n.domain == "edgegate"):
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            assert attrs["plugin_namespace"] == b"edgegate" and attrs["plugin_version"] == b"1"
            assert set(PLUGIN_FIELDS[node.op_type]) <= set(attrs), node.op_type
            record = manifest.extra["plugins"][node.op_type]
            assert (record["namespace"], record["version"]) == ("edgegate", "1")
            assert sorted(record["fields"]) == sorted(PLUGIN_FIELDS[node.op_type])
        if int8:
            _check_symmetric_int8(model)
    script = (kit / "build.sh").read_text()
    if manifest.custom_ops:  # the plugin's sources, and build.sh builds the library
        for source in ("CMakeLists.txt", "src/plugins.cpp", "src/scan_kernels.cu"):
            assert (kit / "plugin" / source).is_file()
        assert "--dynamicPlugins=" in script and "cmake -S plugin" in script
    else:  # a graph without edgegate's ops needs no plugin at all
        assert not (kit / "plugin").exists() and not manifest.extra["plugins"]
        assert "--dynamicPlugins" not in script and "cmake" not in script
    for stem, shapes in manifest.extra["shapes"].items():  # profiles = the declared ranges
        for r in manifest.ranges[stem]["ranges"]:
            profile = shapes[r["input"]]
            assert (profile["min"][r["axis"]], profile["max"][r["axis"]]) == (r["min"], r["max"])
            # optimised for the traced size, at the deployed (smallest) batch
            wanted = r["min"] if r["axis"] == 0 else r["traced"]
            assert profile["opt"][r["axis"]] == wanted
    subprocess.run(["bash", "-n", str(kit / "build.sh")], check=True)
    golden = json.loads((kit / "golden" / "golden.json").read_text())
    assert {p["stem"] for p in golden["parts"]} == {Path(g).stem for g in graphs}
    for part in golden["parts"]:  # real cases over the dynamic batch (zoo kits declare 1..8)
        assert all(case["inputs"][0]["shape"][0] > 1 for case in part["cases"]), part["stem"]
        if manifest.task == "lm":  # and two lengths
            assert len({case["inputs"][0]["shape"][1] for case in part["cases"]}) == 2


def _check_symmetric_int8(model: onnx.ModelProto) -> None:
    """Every Q/DQ of a TensorRT graph is symmetric int8: zero point 0, type int8."""
    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    values |= {
        n.output[0]: numpy_helper.to_array(n.attribute[0].t)
        for n in model.graph.node
        if n.op_type == "Constant"
        and n.attribute
        and n.attribute[0].type == onnx.AttributeProto.TENSOR
    }
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq, "no Q/DQ in an INT8 kit"
    for node in qdq:
        if len(node.input) < 3:
            continue  # no zero point: 0 (and uint8 for Q; TensorRT's rules forbid that below)
        zero_point = values[node.input[2]]
        data = values.get(node.input[0])
        if data is not None and data.dtype == "int32":
            continue  # none expected under tensorrt (float bias), but int32 bias is not Q/DQ'd
        assert zero_point.dtype.name == "int8" and not zero_point.any(), node.name


@pytest.mark.parametrize("model, precision", _cases())
def test_kit_is_complete_and_validates_against_pytorch(run_cli, tmp_path, text, model, precision):
    kit = tmp_path / "kit"
    args = ["export", model, "--target", "tensorrt", "-o", kit, *MODELS[model]]
    data = ["--data", text] if model.endswith("-lm") else []
    if precision == "int8":
        args += ["--int8", "--calib-samples", "16", *data]
    result = run_cli(*args)
    assert result.code == 0, result.stderr
    check_kit(kit, int8=precision == "int8")
    verdict = run_cli("validate", kit, "--parity-samples", "32", *data, "--json")
    assert verdict.code == 0, (verdict.stdout, verdict.stderr)
    timed = run_cli("bench", kit, "--runs", "2", "--warmup", "0", "--json")
    assert timed.code == 0, timed.stderr
    if fallback_reason(kit / "model.engine") is not None:  # no TensorRT here: say what ran
        for result in (verdict, timed):
            assert result.json()["runtime"] == FALLBACK_RUNTIME
            warned = [line for line in result.stderr.splitlines() if "warning:" in line]
            assert len(warned) == 1 and "the TensorRT engine did not run (" in warned[0]
            assert f".onnx ran in {FALLBACK_RUNTIME}" in " ".join(result.stderr.split())


def test_a_user_cnn_kit_profile_follows_input_size_and_says_so(run_cli, tmp_path):
    kit = tmp_path / "kit"
    spec = "tests.pipeline.shape_traps:plain_cnn"
    plain = run_cli("export", spec, "--trust-code", "--task", "image", "--target", "tensorrt",
                    "-o", kit)  # fmt: skip
    assert plain.code == 0, plain.stderr
    assert "pass --input-size" in plain.stderr  # traced at edgegate's default 32x32
    sized = run_cli("export", spec, "--trust-code", "--task", "image", "--target", "tensorrt",
                    "--input-size", "96", "-o", tmp_path / "kit96")  # fmt: skip
    assert sized.code == 0 and "--input-size" not in sized.stderr, sized.stderr
    profile = read_manifest(tmp_path / "kit96").extra["shapes"]["model"]["images"]
    assert profile == {"min": [1, 3, 48, 48], "opt": [1, 3, 96, 96], "max": [8, 3, 192, 192]}
    assert "height 48..192" in sized.stdout
    check_kit(tmp_path / "kit96", int8=False)


def test_fp16_kit_hands_the_plugin_fp32_state(run_cli, tmp_path, text):
    kit = tmp_path / "kit16"
    result = run_cli(
        "export", "gla-lm", "--target", "tensorrt", "--precision", "fp16", "-o", kit, *LM
    )
    assert result.code == 0, result.stderr
    check_kit(kit, int8=False)
    assert read_manifest(kit).precision == "fp16"
    verdict = run_cli("validate", kit, "--parity-samples", "32", "--data", text)
    assert verdict.code == 0, (verdict.stdout, verdict.stderr)


@pytest.mark.parametrize(
    "args, fragment, code",
    [
        (["gla-lm:depth=1,dim=544,heads=1"], "at most 128", 2),  # head dims 272 and 544
        (["qvit", "--precision", "bf16"], "unknown precision 'bf16'", 2),
        (["qvit", "--int8", "--precision", "fp16"], "exclude each other", 2),
        (["qvit", "--build"], "TensorRT", 3),  # no TensorRT and no GPU on this machine
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(run_cli, tmp_path, args, fragment, code):
    if code == 3 and shutil.which("nvidia-smi"):
        pytest.skip("this machine may have a GPU: --build could succeed here")
    out = tmp_path / "kit"
    result = run_cli("export", *args, "--target", "tensorrt", "-o", out)
    assert_one_line_error(result, fragment, code=code)
    assert not out.exists()


def test_fp16_is_refused_by_targets_without_it(run_cli, tmp_path):
    result = run_cli("export", "qvit", "--precision", "fp16", "-o", tmp_path / "x")
    assert_one_line_error(result, "exports fp32, not fp16")


@pytest.mark.slow  # three small exports: about 25 s
def test_exporting_the_same_model_twice_writes_the_same_kit(run_cli, tmp_path):
    """Golden cases are seeded real data: same weights and options -> the same files."""
    spec, first, second = "hgrn-lm:depth=1,dim=32,heads=2", tmp_path / "a", tmp_path / "b"
    assert run_cli("export", spec, "-t", "tensorrt", "--seq-len", "16", "-o", first).code == 0
    weights = ["--checkpoint", first / "weights.pt"]  # the zoo model is random-initialised
    args = ["export", spec, "-t", "tensorrt", "--seq-len", "16", *weights]
    assert run_cli(*args, "-o", second).code == 0
    assert run_cli(*args, "-o", tmp_path / "c").code == 0
    hashes = [read_manifest(kit).files for kit in (second, tmp_path / "c")]
    golden = {name for name in hashes[0] if name.startswith("golden/")}
    assert len(golden) >= 5 and hashes[0] == hashes[1]
