"""Every bad input exits 2 with one line, before any work, leaving nothing half-written.

"Before any work" is checked, not timed: the stage's model loader is replaced by one that
fails the test, so an error that comes only after loading the model cannot pass.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import assert_one_line_error

UNWRITABLE = Path("/proc/edgegate-no-such-dir")  # no process, root included, can create here


@pytest.fixture
def no_work(monkeypatch):
    """Loading a model is the first piece of real work of every stage: forbid it."""

    def forbidden(*args, **kwargs):
        raise AssertionError("the stage started work before rejecting its input")

    for stage in ("export", "quantize", "validate", "zoo"):
        monkeypatch.setattr(f"edgegate.pipeline.{stage}.load_model", forbidden)


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize(
    "command", [["export", "mobilenet-v3-se"], ["quantize", "mobilenet-v3-se"]]
)
def test_output_naming_an_existing_file(run_cli, no_work, tmp_path, command):
    existing = tmp_path / "taken"
    existing.write_text("keep me")
    assert_one_line_error(run_cli(*command, "-o", existing), "taken", "is a file")
    assert existing.read_text() == "keep me" and _listing(tmp_path) == ["taken"]


@pytest.mark.parametrize(
    "command",
    [
        ["export", "mobilenet-v3-se"],
        ["quantize", "mobilenet-v3-se"],
        ["deploy", "mobilenet-v3-se"],
    ],
)
def test_unwritable_output_folder(run_cli, no_work, command):
    assert_one_line_error(run_cli(*command, "-o", UNWRITABLE / "out"), "cannot be written")


def test_output_folder_under_a_file(run_cli, no_work, tmp_path):
    (tmp_path / "file").write_text("")
    result = run_cli("export", "mobilenet-v3-se", "-o", tmp_path / "file" / "sub")
    assert_one_line_error(result, "is a file")
    assert _listing(tmp_path) == ["file"]


def test_train_output_unwritable(run_cli, no_work):
    assert_one_line_error(
        run_cli("train", "mobilenet-v3-se", "-o", UNWRITABLE / "m.pt"), "cannot be written"
    )


def test_junit_parent_folders_are_created(run_cli, gc_export, tmp_path):
    junit = tmp_path / "nodir" / "sub" / "parity.xml"
    result = run_cli("validate", gc_export, "--junit", junit, "--parity-samples", "16")
    assert result.code == 0, result.stderr
    assert "<testsuite" in junit.read_text()


@pytest.mark.parametrize("name", ["parity.txt", "."])
def test_junit_path_that_is_no_xml_file(run_cli, no_work, gc_export, tmp_path, name):
    junit = tmp_path / name
    assert_one_line_error(run_cli("validate", gc_export, "--junit", junit), "--junit")


def test_junit_unwritable(run_cli, no_work, gc_export):
    result = run_cli("validate", gc_export, "--junit", UNWRITABLE / "p.xml")
    assert_one_line_error(result, "cannot be written")


def test_tampered_folder_still_writes_a_junit_verdict(run_cli, gc_export, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(gc_export, copy)
    (copy / "model.onnx").write_bytes(b"tampered")
    junit = tmp_path / "ci" / "parity.xml"
    assert_one_line_error(run_cli("validate", copy, "--junit", junit), "model.onnx")
    xml = junit.read_text()
    assert 'failures="1"' in xml and "SHA-256" in xml


def test_bench_plot_into_an_unwritable_folder(run_cli, gc_export):
    result = run_cli("bench", gc_export, "--runs", "2", "--plot", UNWRITABLE / "lat.png")
    assert_one_line_error(result, "cannot be written")


def test_bench_plot_must_be_png(run_cli, gc_export, tmp_path):
    result = run_cli("bench", gc_export, "--runs", "2", "--plot", tmp_path / "lat.jpg")
    assert_one_line_error(result, ".png")
    assert _listing(tmp_path) == []


def test_bench_plot_parent_folders_are_created(run_cli, gc_export, tmp_path):
    plot = tmp_path / "plots" / "lat.png"
    result = run_cli("bench", gc_export, "--runs", "2", "--plot", plot)
    assert result.code == 0, result.stderr
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_bench_of_a_corrupt_file(run_cli, tmp_path):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage" * 50)
    assert_one_line_error(run_cli("bench", corrupt), "corrupt.onnx")


def test_deploy_rejects_an_unknown_profile_before_any_work(run_cli, no_work, tmp_path):
    out = tmp_path / "deploy"
    result = run_cli("deploy", "mobilenet-v3-se", "--int8", "--profile", "tflite", "-o", out)
    assert_one_line_error(result, "tflite")
    assert not out.exists()


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("qlm:depth=0", "depth must be at least 1"),
        ("gla-lm:dim=0", "dim must be at least 1"),
        ("mobilenet-v3-se:width=-1", "width must be positive"),
        ("mobilenet-v3-se:in_channels=2", "in_channels must be 1 or 3"),
        ("gc-mobilenet:threshold=1.5", "threshold must lie in (0, 1)"),
        ("qvit:num_classes=1", "num_classes must be at least 2"),
    ],
)
def test_degenerate_model_specs(run_cli, tmp_path, spec, fragment):
    out = tmp_path / "out"
    assert_one_line_error(run_cli("export", spec, "-o", out), fragment)
    assert not out.exists()


@pytest.mark.parametrize("command", ["export", "quantize", "evaluate"])
def test_input_size_below_the_networks_stride(run_cli, tmp_path, command):
    args = [command, "mobilenet-v3-se", "--input-size", "2"]
    if command != "evaluate":
        args += ["-o", tmp_path / "out"]
    assert_one_line_error(run_cli(*args), "side 2", "total stride 32")
    assert not (tmp_path / "out").exists()


def test_one_channel_calibration_data_for_a_three_channel_model(run_cli, tmp_path):
    grey = np.random.default_rng(0).random((8, 1, 32, 32)).astype("float32")
    np.savez(tmp_path / "grey.npz", images=grey)
    out = tmp_path / "out"
    result = run_cli(
        "quantize", "mobilenet-v3-se", "--calib-data", tmp_path / "grey.npz", "-o", out
    )
    assert_one_line_error(result, "1-channel", "3 channels")
    assert not out.exists()


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["export", "qvit", "--target", "tflite"], "tflite"),
        (["quantize", "qvit", "--profile", "onnxruntime:riscv"], "onnxruntime:riscv"),
        (["quantize", "qvit", "--max-drop", "-1"], "--max-drop"),
        (["bench", ".", "--runs", "0"], "--runs"),
    ],
)
def test_bad_options_are_one_line_usage_errors(run_cli, no_work, tmp_path, args, fragment):
    assert_one_line_error(
        run_cli(*args, "-o", tmp_path / "o") if args[0] != "bench" else run_cli(*args), fragment
    )
    assert not (tmp_path / "o").exists()


def test_exports_keep_image_channels_static(gc_export):
    inputs = json.loads((gc_export / "manifest.json").read_text())["inputs"]
    batch, channels, height, width = inputs[0]["shape"]
    assert channels == 3
    assert all(isinstance(d, str) for d in (batch, height, width))
