"""`edgegate bundle` and `edgegate judge`: a folder that runs on a device with numpy and the
device's runtime only, judged back on the host with validate's exit codes.

The device here is a fresh virtual environment holding only the runtime's import closure
(``minimal_env``): run.py cannot reach torch or edgegate there, as on a board.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgegate.pipeline.bundle import bundle
from tests.conftest import assert_one_line_error
from tests.pipeline.minimal_env import make_env, run_isolated

SAMPLES = 32


@pytest.fixture(scope="module")
def gc_bundle(gc_export, tmp_path_factory) -> Path:
    """The gc-mobilenet ONNX Runtime export, bundled with 32 test digits. Copy before changing."""
    out = tmp_path_factory.mktemp("bundle") / "gc"
    bundle(gc_export, out, samples=SAMPLES)
    return out


@pytest.fixture(scope="module")
def ort_python(tmp_path_factory) -> Path:
    """A device Python: numpy and onnxruntime, nothing else."""
    folder = tmp_path_factory.mktemp("venv")
    python = make_env(folder / "ort", "import numpy, onnxruntime")
    for absent in ("torch", "edgegate"):
        probe = run_isolated(python, "-c", f"import {absent}", cwd=folder)
        assert probe.returncode != 0, f"{absent} is importable in the device environment"
    return python


def copy_bundle(source: Path, tmp_path: Path) -> Path:
    target = tmp_path / "bundle"
    shutil.copytree(source, target)
    return target


def run_on_device(python: Path, folder: Path, *args: str) -> subprocess.CompletedProcess:
    run_py = folder / "run.py"  # it finds its bundle beside itself, wherever it is called from
    return run_isolated(
        python, run_py, "--runs", "5", "--warmup", "1", "--threads", "1", *args, cwd=folder.parent
    )


def test_bundle_holds_the_model_samples_expected_outputs_and_run_script(gc_bundle):
    record = json.loads((gc_bundle / "bundle.json").read_text())
    assert record["runtime"] == "onnxruntime" and record["samples"] == SAMPLES
    assert (
        record["model_files"] == ["model/model.onnx"] and (gc_bundle / "model/model.onnx").is_file()
    )
    assert record["tolerance"]["precision"] == "fp32"
    assert record["gate_outputs"] == ["gate_prob"] and record["settings"]["positive_class"] == 0
    with np.load(gc_bundle / "inputs.npz") as npz:
        assert npz["images"].shape == (SAMPLES, 3, 32, 32)
    with np.load(gc_bundle / "expected.npz") as npz:
        assert set(npz.files) == {"logits", "gate_prob"} and len(npz["logits"]) == SAMPLES
    assert module_imports(gc_bundle / "run.py") <= {"numpy"} | set(sys.stdlib_module_names)


def module_imports(script: Path) -> set[str]:
    """Top-level packages a script imports at module level (the runtimes load inside functions,
    only for the runtime a bundle names)."""
    tree = ast.parse(script.read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_device_run_with_only_numpy_and_onnxruntime_is_judged_a_pass(
    gc_bundle, ort_python, tmp_path, run_cli
):
    folder = copy_bundle(gc_bundle, tmp_path)
    done = run_on_device(ort_python, folder)
    assert done.returncode == 0, done.stderr
    results = json.loads((folder / "results.json").read_text())
    assert results["runtime"]["name"] == "onnxruntime" and results["latency_ms"]["runs"] == 5
    junit = tmp_path / "judge.xml"
    verdict = run_cli("judge", folder, "--json", "--junit", junit)
    assert verdict.code == 0, (verdict.stdout, verdict.stderr)
    report = verdict.json()
    assert report["passed"] and report["top1_agreement"] == 100.0
    assert report["gate_agreement"] == 100.0 and report["warnings"] == []
    assert report["accuracy"]["candidate"] == report["accuracy"]["reference"]
    assert report["latency_ms"]["p50"] > 0 and report["device"]["machine"]
    assert 'failures="0"' in junit.read_text()


def perturb_random_weight(model_path: Path, rng: np.random.Generator) -> str:
    """Add noise of the weight's own size to one conv/linear weight picked at random."""
    model = onnx.load(model_path)
    weights = [i for i in model.graph.initializer if len(i.dims) >= 2 and i.data_type == 1]
    chosen = weights[int(rng.integers(len(weights)))]
    value = numpy_helper.to_array(chosen).copy()
    value += rng.standard_normal(value.shape).astype(np.float32) * (np.abs(value).mean() + 1e-3)
    chosen.CopyFrom(numpy_helper.from_array(value, chosen.name))
    onnx.save(model, model_path)
    return chosen.name


def test_a_weight_perturbed_before_the_device_run_fails_the_judge(
    gc_bundle, ort_python, tmp_path, run_cli
):
    seed = int(np.random.default_rng().integers(1 << 31))
    folder = copy_bundle(gc_bundle, tmp_path)
    name = perturb_random_weight(folder / "model/model.onnx", np.random.default_rng(seed))
    done = run_on_device(ort_python, folder)
    assert done.returncode == 0, done.stderr
    verdict = run_cli("judge", folder, "--json")
    assert verdict.code == 1, f"seed {seed}, weight {name}: {verdict.stdout}"
    report = verdict.json()
    assert not report["passed"] and report["failures"]
    assert any("SHA-256 other than the bundled one" in w for w in report["warnings"])


def test_nan_outputs_fail_the_judge(gc_bundle, ort_python, tmp_path, run_cli):
    folder = copy_bundle(gc_bundle, tmp_path)
    assert run_on_device(ort_python, folder).returncode == 0
    results = json.loads((folder / "results.json").read_text())
    results["outputs"]["logits"]["data"][3][1] = float("nan")
    (folder / "results.json").write_text(json.dumps(results))
    assert run_cli("judge", folder).code == 1


# --- bad input: one line, exit 2 ---------------------------------------------------------


@pytest.fixture(scope="module")
def ran_bundle(gc_bundle, ort_python, tmp_path_factory) -> Path:
    """The bundle after a device run: the starting point of the tampering tests."""
    folder = copy_bundle(gc_bundle, tmp_path_factory.mktemp("ran"))
    assert run_on_device(ort_python, folder).returncode == 0
    return folder


def _edit_results(folder: Path, edit) -> None:
    results = json.loads((folder / "results.json").read_text())
    edit(results)
    (folder / "results.json").write_text(json.dumps(results))


@pytest.mark.parametrize(
    "tamper, fragment",
    [
        (lambda f: (f / "results.json").unlink(), "run `python3 run.py`"),
        (lambda f: (f / "bundle.json").unlink(), "has no bundle.json"),
        (lambda f: (f / "expected.npz").write_bytes(b"x"), "does not match the SHA-256"),
        (lambda f: (f / "labels.npz").unlink(), "lacks 'labels.npz'"),
        (lambda f: (f / "results.json").write_text("{"), "not a valid results file"),
        (
            lambda f: _edit_results(f, lambda r: r.update(bundle_id="0123456789abcdef")),
            "results from another bundle",
        ),
        (
            lambda f: _edit_results(f, lambda r: r["outputs"].pop("gate_prob")),
            "has no output 'gate_prob'",
        ),
        (
            lambda f: _edit_results(
                f, lambda r: r["outputs"]["logits"].update(data=r["outputs"]["logits"]["data"][:5])
            ),
            "has shape [5, 10], expected [32, 10]",
        ),
    ],
    ids=[
        "no-results",
        "no-record",
        "hash",
        "missing-file",
        "bad-json",
        "other-bundle",
        "missing-output",
        "shape",
    ],  # fmt: skip
)
def test_a_tampered_or_mismatched_bundle_is_bad_input(
    ran_bundle, tmp_path, run_cli, tamper, fragment
):
    folder = copy_bundle(ran_bundle, tmp_path)
    tamper(folder)
    junit = tmp_path / "judge.xml"
    assert_one_line_error(run_cli("judge", folder, "--junit", junit), fragment)
    assert 'failures="1"' in junit.read_text()  # CI still gets a verdict file


def test_bundle_refuses_bad_input_before_any_work(gc_export, tmp_path, run_cli, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("the bundle loaded the model before refusing its input")

    monkeypatch.setattr("edgegate.pipeline.bundle.load_reference_side", forbidden)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    assert_one_line_error(run_cli("bundle", gc_export, "-o", taken), "already holds files")
    assert_one_line_error(run_cli("bundle", tmp_path / "nowhere", "-o", tmp_path / "b"),
                          "neither an export folder")  # fmt: skip
    assert_one_line_error(
        run_cli("bundle", gc_export / "model.onnx", "-o", tmp_path / "b"), "takes its export folder"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_bundle_asking_more_samples_than_the_data_holds_is_bad_input(gc_export, tmp_path, run_cli):
    out = tmp_path / "b"
    assert_one_line_error(run_cli("bundle", gc_export, "-o", out, "--samples", "100000"),
                          "--samples 100000")  # fmt: skip
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_run_py_refuses_a_tampered_bundle_and_a_missing_runtime(gc_bundle, ort_python, tmp_path):
    folder = copy_bundle(gc_bundle, tmp_path)
    with np.load(folder / "inputs.npz") as npz:
        images = npz["images"] + 1
    np.savez(folder / "inputs.npz", images=images)
    done = run_on_device(ort_python, folder)
    assert done.returncode == 2 and "does not match the SHA-256" in done.stderr
    assert not (folder / "results.json").exists()
    shutil.copy(gc_bundle / "inputs.npz", folder / "inputs.npz")
    bare = make_env(tmp_path / "bare", "import numpy")  # numpy, and no onnxruntime
    done = run_on_device(bare, folder)
    assert done.returncode == 3 and "onnxruntime is not installed" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (folder / "results.json").exists()


# --- other runtimes: ExecuTorch, a scan LM, a TensorRT kit through trtexec -----------------


@pytest.mark.slow  # an ExecuTorch export: about a minute on 2 cores
def test_executorch_bundle_runs_with_only_executorchs_runtime(tmp_path, run_cli):
    pytest.importorskip("executorch", reason="executorch is not installed")
    export = tmp_path / "et"
    assert (
        run_cli("export", "qvit:attention=gated,depth=1", "-t", "executorch", "-o", export).code
        == 0
    )
    folder = tmp_path / "bundle"
    assert run_cli("bundle", export, "-o", folder, "--samples", "16").code == 0
    python = make_env(tmp_path / "venv", "import numpy, executorch.runtime")
    assert run_isolated(python, "-c", "import edgegate", cwd=tmp_path).returncode != 0
    done = run_on_device(python, folder)
    assert done.returncode == 0, done.stderr
    verdict = run_cli("judge", folder, "--json")
    assert verdict.code == 0, verdict.stdout
    report = verdict.json()
    assert report["runtime"] == "executorch" and report["runtime_version"] == "1.5.1"
    assert (
        report["outputs"]["logits"]["max_abs"] < 1e-4
        and report["accuracy"]["candidate"]["samples"] == 16
    )


def test_scan_lm_bundle_is_judged_by_parity_and_perplexity(ort_python, tmp_path, run_cli):
    """gla-lm's ONNX holds edgegate's scan op with its local-function fallback, which a plain
    onnxruntime runs."""
    export = tmp_path / "lm"
    assert run_cli("export", "gla-lm:depth=1", "-o", export, "--seq-len", "32").code == 0
    folder = tmp_path / "bundle"
    assert run_cli("bundle", export, "-o", folder).code == 0
    done = run_on_device(ort_python, folder)
    assert done.returncode == 0, done.stderr
    verdict = run_cli("judge", folder, "--json")
    assert verdict.code == 0, verdict.stdout
    report = verdict.json()
    assert report["parity_samples"] == 4
    reference, candidate = report["accuracy"]["reference"], report["accuracy"]["candidate"]
    assert candidate["tokens"] == 4 * 32
    assert candidate["perplexity"] == pytest.approx(reference["perplexity"], rel=1e-4)


@pytest.mark.slow  # each trtexec stand-in call starts a Python with torch: about 50 s
def test_tensorrt_kit_bundle_runs_through_trtexec_and_its_exported_files(tmp_path, run_cli):
    """The kit goes whole into the bundle (it builds its engine on the device); run.py drives
    trtexec with the raw --loadInputs files, or collects --exportOutput/--exportTimes files
    made elsewhere. trtexec here is a stand-in (no TensorRT, no GPU on this machine)."""
    export = tmp_path / "kit"
    assert (
        run_cli("export", "qvit:attention=gated,depth=1", "-t", "tensorrt", "-o", export).code == 0
    )
    folder = tmp_path / "bundle"
    assert run_cli("bundle", export, "-o", folder, "--samples", "3").code == 0
    record = json.loads((folder / "bundle.json").read_text())
    assert {"model/build.sh", "model/model.onnx"} <= set(record["model_files"])
    assert record["tensorrt"]["engine"] == "model/model.engine"
    assert len(record["raw_inputs"]) == 3  # each sample is one trtexec process
    python = make_env(tmp_path / "venv", "import numpy")  # trtexec does the work, not Python
    done = run_on_device(python, folder, "--trtexec", str(tmp_path / "trtexec"))
    assert done.returncode == 3 and "trtexec is not found" in done.stderr
    fake = tmp_path / "trtexec"
    fake.write_text(
        f'#!/bin/sh\nexec {sys.executable} {Path(__file__).parent / "fake_trtexec.py"} "$@"\n'
    )
    fake.chmod(0o755)
    done = run_on_device(python, folder, "--trtexec", str(fake))
    assert (
        done.returncode == 3 and "run " in done.stderr and "build.sh" in done.stderr
    )  # no engine yet
    shutil.copy(folder / "model/model.onnx", folder / "model/model.engine")  # what build.sh makes
    done = run_on_device(python, folder, "--trtexec", str(fake))
    assert done.returncode == 0, done.stderr
    verdict = run_cli("judge", folder, "--json")
    assert verdict.code == 0, verdict.stdout
    assert verdict.json()["latency_ms"]["runs"] == 5
    # trtexec runs made by hand (or by build.sh) are collected the same way
    exported = tmp_path / "exported"
    exported.mkdir()
    for i in range(3):
        raw = ",".join(f"{n}:{folder / p}" for n, p in record["raw_inputs"][str(i)].items())
        shapes = ",".join(f"{s['name']}:{'x'.join(map(str, s['shape']))}" for s in record["inputs"])
        subprocess.run([fake, f"--loadEngine={folder / 'model/model.engine'}", f"--shapes={shapes}",
                        f"--loadInputs={raw}", f"--exportOutput={exported / f'sample_{i}.json'}"],
                       check=True, capture_output=True)  # fmt: skip
    (folder / "results.json").unlink()
    done = run_on_device(python, folder, "--from-trtexec", str(exported))
    assert done.returncode == 0, done.stderr
    verdict = run_cli("judge", folder, "--json")
    assert verdict.code == 0 and verdict.json()["latency_ms"] is None


def test_coreml_bundle_carries_the_package_and_run_py_says_predict_needs_macos(tmp_path, run_cli):
    pytest.importorskip("coremltools", reason="coremltools is not installed")
    if sys.platform == "darwin":
        pytest.skip("on macOS run.py predicts; this test covers the Linux refusal")
    export = tmp_path / "ml"
    assert run_cli("export", "qvit:attention=gated,depth=1", "-t", "coreml", "-o", export).code == 0
    folder = tmp_path / "bundle"
    assert run_cli("bundle", export, "-o", folder, "--samples", "4").code == 0
    record = json.loads((folder / "bundle.json").read_text())
    assert record["model_files"] == ["model/model.mlpackage"] and record["precision"] == "fp16"
    assert (folder / "model/model.mlpackage/Manifest.json").is_file()
    with np.load(folder / "inputs.npz") as npz:
        assert npz["images"].dtype == np.float32  # Core ML fp16 packages take fp32 inputs
    done = run_on_device(make_env(tmp_path / "venv", "import numpy"), folder)
    assert done.returncode == 3 and "Core ML predict needs macOS" in done.stderr
    assert_one_line_error(run_cli("judge", folder), "run `python3 run.py`")
