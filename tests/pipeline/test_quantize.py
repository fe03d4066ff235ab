"""`edgegate quantize` end to end: accuracy targets, ONNX parity, profile rules, records, errors."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgegate.hostcpu import host_isa
from edgegate.manifest import read_manifest
from edgegate.models import load_model
from edgegate.pipeline.quantize import quantize
from edgegate.pipeline.tasks import TASKS
from edgegate.quant.state import STATE_FORMAT, load_fake_quant, tensor_hash
from tests.conftest import MOBILENET_INT8_CALIB, assert_one_line_error

CALIB = str(MOBILENET_INT8_CALIB)  # the shared mobilenet_int8 export's, for every run here
INT8_ONNX, INT8_STATE = "model.int8.onnx", "model.int8.pt"


@pytest.fixture(scope="module")
def quantized(tmp_path_factory, mobilenet_int8):
    """One PTQ run per (model, profile) the acceptance names, shared by the tests below."""
    from edgegate.cli import main

    runs = {("mobilenet-v3-se", "onnxruntime"): mobilenet_int8}
    for model, profile in [
        ("gc-mobilenet", "onnxruntime"),
        ("gc-mobilenet", "tensorrt"),
    ]:
        out = tmp_path_factory.mktemp(f"{model}-{profile}")
        assert (
            main(["quantize", model, "-p", profile, "--calib-samples", CALIB, "-o", str(out)]) == 0
        )
        runs[model, profile] = out
    return runs


def _report(directory):
    return json.loads((directory / "report.json").read_text())


@pytest.mark.parametrize("model", ["mobilenet-v3-se", "gc-mobilenet"])
def test_ptq_minmax_onnxruntime_loses_at_most_half_a_point(quantized, model):
    report = _report(quantized[model, "onnxruntime"])
    acc = report["accuracy"]
    assert acc["float"]["top1"] - acc["ptq"]["top1"] <= 0.5, acc
    assert acc["float"]["top1"] - acc["int8_onnx"]["top1"] <= 0.5, acc


@pytest.mark.parametrize("model", ["mobilenet-v3-se", "gc-mobilenet"])
def test_default_profile_is_the_hosts_and_its_kernels_agree_with_the_dequantized_graph(
    quantized, model
):
    """Plain `onnxruntime` quantizes for this host's CPU, so ORT's fused integer kernels compute
    what the dequantized graph computes (on AVX2 hosts, full-range weights would saturate)."""
    report = _report(quantized[model, "onnxruntime"])
    assert report["quant"]["profile"] == f"onnxruntime:{host_isa()}"
    assert report["kernel_agreement"] >= 99.0, report["kernel_agreement"]


def test_calibration_on_noise_that_breaks_the_export_exits_1_and_keeps_the_files(run_cli, tmp_path):
    """16 noise images set ranges that cost gc-mobilenet about 3 top-1 points: quantize says so
    in one line and exits 1 (the honest runs of the `quantized` fixture exit 0). The AVX2
    variant computes the same on every CPU, so the verdict does not depend on the host's."""
    noise = np.random.default_rng(0).standard_normal((16, 3, 32, 32)).astype("float32")
    np.savez(tmp_path / "noise.npz", images=noise)
    out = tmp_path / "out"
    result = run_cli(
        "quantize", "gc-mobilenet", "--profile", "onnxruntime:x86-avx2", "--calib-data",
        tmp_path / "noise.npz", "--calib-samples", "32", "-o", out,
    )  # fmt: skip
    assert result.code == 1, result.stderr
    assert "calibrated on 16 samples" in result.stderr  # all the file holds, not the 32 asked
    why = [line for line in result.stderr.splitlines() if "INT8 check failed" in line]
    assert len(why) == 1 and "--max-drop" in why[0], result.stderr
    report = _report(out)
    assert report["passed"] is False and report["drop_points"] > 1.0, report["failures"]
    assert read_manifest(out).files  # the files stay, hashed, for inspection


def test_gc_gate_decisions_flip_on_at_most_half_a_percent(quantized):
    for profile in ("onnxruntime", "tensorrt"):
        flips = _report(quantized["gc-mobilenet", profile])["gate_flip_rate"]
        assert flips["onnx_vs_float"] <= 0.5 and flips["fake_quant_vs_float"] <= 0.5, flips


@pytest.mark.slow  # two epochs of quantization-aware training: about a minute on 2 cores
def test_qat_two_epochs_recovers_at_least_half_of_a_real_ptq_drop(tmp_path):
    """One calibration image leaves ranges too narrow: PTQ loses points, and QAT must win half
    of them back (acceptance: `--qat-epochs 2` recovers >= half of any drop above 0.2)."""
    result = quantize("mobilenet-v3-se", tmp_path / "qat", calib_samples=1, qat_epochs=2)
    recovery = result["qat_recovery"]
    assert recovery["ptq_loss"] > 0.2, f"no PTQ drop to recover, the test proves nothing: {result}"
    assert recovery["recovered_fraction"] >= 0.5, recovery
    acc = result["accuracy"]
    # The export carries the trained weights: ONNX scores like the QAT model, not the PTQ one.
    assert abs(acc["int8_onnx"]["top1"] - acc["qat"]["top1"]) <= 0.5, acc
    # drop_points is what ships: the INT8 export against float, not the fake-quant model
    assert result["drop_points"] == round(acc["float"]["top1"] - acc["int8_onnx"]["top1"], 4)


@pytest.mark.parametrize(
    "key",
    [
        ("mobilenet-v3-se", "onnxruntime"),
        ("gc-mobilenet", "onnxruntime"),
        ("gc-mobilenet", "tensorrt"),
    ],
)
def test_int8_onnx_agrees_with_fake_quant(quantized, key):
    assert _report(quantized[key])["onnx_vs_fake_quant"]["top1_agreement"] >= 99.5


def _activation_zero_points(path) -> list[int]:
    model = onnx.load(path)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    consts = {
        n.output[0]: numpy_helper.to_array(n.attribute[0].t)
        for n in model.graph.node
        if n.op_type == "Constant"
        and n.attribute
        and n.attribute[0].type == onnx.AttributeProto.TENSOR
    }
    values = {**inits, **consts}
    return [
        int(values[n.input[2]].ravel()[0])
        for n in model.graph.node
        if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in values
    ]


def test_tensorrt_profile_activation_zero_points_are_zero(quantized):
    trt = _activation_zero_points(quantized["gc-mobilenet", "tensorrt"] / INT8_ONNX)
    ort = _activation_zero_points(quantized["gc-mobilenet", "onnxruntime"] / INT8_ONNX)
    assert trt and all(zp == 0 for zp in trt)
    assert any(zp != 0 for zp in ort)  # u8 asymmetric: the check above can fail
    assert _report(quantized["gc-mobilenet", "tensorrt"])["activation_zero_points_all_zero"]


def test_manifest_records_profile_method_and_calibration_hash(quantized):
    directory = quantized["mobilenet-v3-se", "onnxruntime"]
    manifest = read_manifest(directory)  # also verifies every file's SHA-256
    assert manifest.precision == "int8"
    assert manifest.quant["profile"] == f"onnxruntime:{host_isa()}"  # the variant it resolved to
    assert manifest.quant["method"] == "minmax"
    loaded = load_model("mobilenet-v3-se")
    calib, _ = TASKS["image"].calibration_inputs(loaded, None, int(CALIB))
    assert manifest.quant["calibration"]["sha256"] == tensor_hash(calib)
    assert manifest.quant["calibration"]["samples"] == int(CALIB)
    assert {"model.int8.onnx", "model.int8.pt", "report.json"} <= set(manifest.files)


def test_saved_state_rebuilds_the_fake_quant_model(quantized):
    import torch

    directory = quantized["gc-mobilenet", "tensorrt"]
    loaded = load_model("gc-mobilenet")
    rebuilt = load_fake_quant(directory / INT8_STATE, loaded.module)
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(8, 3, 32, 32)).astype("float32"))
    from edgegate.runtime import OnnxRuntimeRunner

    # a TensorRT graph is checked as written: ORT's fused integer kernels round their own way
    with OnnxRuntimeRunner(directory / INT8_ONNX, fuse_qdq=False) as runner:
        onnx_logits = runner.run({"images": x.numpy()})["logits"]
    with torch.no_grad():
        logits = rebuilt(x)[0].numpy()
    assert (logits.argmax(1) == onnx_logits.argmax(1)).mean() >= 0.875
    assert np.abs(logits - onnx_logits).max() < 0.1 * np.abs(logits).max()


def test_validate_judges_int8_export_against_fake_quant(quantized, run_cli):
    result = run_cli("validate", quantized["gc-mobilenet", "onnxruntime"], "--json")
    assert result.code == 0, result.stderr
    payload = result.json()
    assert payload["precision"] == "int8" and payload["passed"]
    assert payload["top1_agreement"] >= 99.5
    assert "float" in payload["accuracy"]


@pytest.fixture()
def bad_data(tmp_path):
    images = np.random.default_rng(0).random((8, 3, 32, 32)).astype("float32")
    nan = images.copy()
    nan[3, 0, 0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", images=nan)
    (tmp_path / "empty").mkdir()
    return tmp_path


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--calib-data", "{d}/missing"], "unknown data source"),
        (["--calib-data", "{d}/empty"], "no images"),
        (["--calib-data", "{d}/nan.npz"], "non-finite"),
        (["--profile", "nope"], "unknown quantization profile"),
        (["--method", "nope"], "unknown calibration method"),
        (["--calib-samples", "0"], "--calib-samples"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(run_cli, bad_data, args, fragment):
    out = bad_data / "out"
    result = run_cli(
        "quantize", "mobilenet-v3-se", "-o", out, *[a.format(d=bad_data) for a in args]
    )
    assert_one_line_error(result, fragment)
    assert not out.exists()


def test_shape_mismatch_exits_2(run_cli, tmp_path):
    out = tmp_path / "out"
    result = run_cli("quantize", "qvit", "--input-size", "20", "-o", out)
    assert_one_line_error(result, "do not fit qvit")
    assert not out.exists()


def test_rebuild_restores_biases_that_bias_correction_added(tmp_path):
    """A layer without a bias gains one in bias correction; the saved state must still load."""
    import torch
    from torch import nn

    from edgegate.quant.calibrate import calibrate
    from edgegate.quant.graph import QuantConfig, quantize_model
    from edgegate.quant.profiles import get_profile

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16, bias=False), nn.ReLU(), nn.Linear(16, 4, bias=False))
    quant = {"profile": "onnxruntime", "method": "minmax", "quantize_scan_inputs": False}
    qmodel = quantize_model(model, QuantConfig(get_profile("onnxruntime"), "minmax"))
    x = torch.randn(64, 8)
    calibrate(qmodel, [(x,)])
    state = qmodel.state_dict()
    assert any(key.endswith(".bias") for key in state), "bias correction added no bias"
    path = tmp_path / "state.pt"
    torch.save({"format": STATE_FORMAT, "spec": "tiny", "quant": quant, "state": state}, path)
    rebuilt = load_fake_quant(path, model)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), qmodel.eval()(x))


def test_a_state_from_an_older_edgegate_is_refused_in_one_line(tmp_path):
    import torch

    from edgegate.errors import BadInput

    path = tmp_path / "old.int8.pt"
    torch.save({"format": "edgegate-int8/1", "spec": "x", "quant": {}, "state": {}}, path)
    with pytest.raises(BadInput, match="older edgegate .* run `edgegate quantize` again"):
        load_fake_quant(path, torch.nn.Linear(2, 2))


def test_qlm_int8_quantizes_and_validates(tmp_path, run_cli):
    """The LM path end to end: sequences calibrate whole, the state rebuilds (bias correction
    gives the tied head a bias), and `validate` passes on decisions that are not near-ties."""
    from edgegate.data import stdlib_text

    text = tmp_path / "test.txt"  # the first 16 kB of the built-in test split: 496 windows
    text.write_bytes(stdlib_text("test")[:16384].numpy().tobytes())
    out = tmp_path / "qlm"
    result = quantize("qlm", out, calib_samples=16, seq_len=32, data=str(text))
    agreement = result["onnx_vs_fake_quant"]
    assert agreement["decisive_top1_agreement"] >= 99.5, agreement
    assert result["perplexity_increase"] < 0.05 * result["accuracy"]["float"]["perplexity"]
    verdict = run_cli("validate", out, "--data", text, "--json")
    assert verdict.code == 0, (verdict.stdout, verdict.stderr)
    parity = json.loads(verdict.stdout)
    assert parity["decisive_top1_agreement"] >= 99.5, parity
