"""`edgegate export --target executorch`: XNNPACK .pte files that run here in ExecuTorch's own
runtime and validate against PyTorch, FP32 and INT8 (PT2E), plus the bad inputs it refuses
before any work.

The CNN exports take minutes on 2 cores (lowering mobilenet-v3-se alone is 30-70 s), so the
default run covers one image model and one scan LM at small specs; `-m slow` covers the zoo.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgegate.manifest import read_manifest
from tests.conftest import assert_one_line_error

ROOT = Path(__file__).resolve().parents[2]
HAVE_EXECUTORCH = importlib.util.find_spec("executorch") is not None
needs_executorch = pytest.mark.skipif(
    not HAVE_EXECUTORCH,
    reason="executorch is not installed (pip install 'edgegate-nn[executorch]')",
)
slow = pytest.mark.slow

# spec -> extra export arguments; the default run's two are small specs of zoo models
QUICK = {
    "qvit:attention=gated,depth=1": [],
    "gla-lm:depth=1": ["--seq-len", "64"],
}
ZOO = {
    "mobilenet-v3-se": [],
    "gc-mobilenet": [],
    "qvit": [],
    "qvit:attention=clipped": [],
    "qvit:attention=gated": [],
    "qlm": [],
    "qlm:attention=clipped": [],
    "qlm:attention=gated": [],
    "gla-lm": ["--seq-len", "64"],  # the acceptance's length
    "hgrn-lm": [],
    "gdn-lm": [],
}


@pytest.fixture(scope="module")
def text(tmp_path_factory) -> Path:
    """8 KiB of the stdlib test text: enough windows to validate an LM, quick to score."""
    from edgegate.data import stdlib_text

    path = tmp_path_factory.mktemp("text") / "test.txt"
    path.write_bytes(stdlib_text("test")[:8192].numpy().tobytes())
    return path


def check_export(out: Path, lm: bool) -> dict:
    """The folder holds .pte files with their record; returns the manifest's executorch block."""
    manifest = read_manifest(out)  # every file present with its SHA-256
    assert manifest.target == "executorch" and manifest.custom_ops == []
    record = manifest.extra["executorch"]
    assert record["version"] == "1.5.1" and record["max_batch"] == 8
    programs = sorted(name for name in manifest.files if name.endswith(".pte"))
    assert [Path(p).stem for p in programs] == sorted(record["parts"])
    (spec,) = manifest.inputs
    part = record["parts"][Path(manifest.extra["model_file"]).stem]
    ranges = part["dynamic_ranges"]
    if spec.shape[0] == "batch":
        assert ranges[spec.name]["batch"] == [1, 8]
    else:  # XNNPACK's reshape takes one dynamic dim (qlm's gated heads): batch 1, said why
        assert spec.shape[0] == 1
        assert any(line.startswith(f"{spec.name}.batch fixed at 1") for line in part["static_dims"])
    if lm:  # the sequence range is [1, max_len], max_len being the export's length
        assert spec.shape[1:] == ["seq_len"]
        assert ranges["tokens"]["seq_len"] == [1, manifest.extra["example_shapes"]["tokens"][1]]
    for part in record["parts"].values():
        for line in part["static_dims"]:  # a dim given up is said, with the reason
            assert "fixed at" in line
    return record


@pytest.fixture(scope="module")
def quick_exports(tmp_path_factory):
    """The default run's two exports (`edgegate export M --target executorch`), made once for
    the tests below: {spec: folder}."""
    from edgegate.cli import main

    folders = {}
    for model, args in QUICK.items():
        out = tmp_path_factory.mktemp("et") / "export"
        assert main(["export", model, "--target", "executorch", "-o", str(out), *args]) == 0
        folders[model] = out
    return folders


def _validate(run_cli, out: Path, model: str, text: Path) -> dict:
    lm = "lm" in model
    check_export(out, lm)
    data = ["--data", text] if lm else []
    verdict = run_cli("validate", out, "--parity-samples", "32", "--json", *data)
    assert verdict.code == 0, (verdict.stdout, verdict.stderr)
    result = verdict.json()
    assert result["passed"] and result["runtime"] == "executorch"
    for name, metrics in result["outputs"].items():
        print(f"{model} {name}: max abs {metrics['max_abs']:.3g}")  # the report's figures
    return result


@needs_executorch
@pytest.mark.parametrize("model", list(QUICK))
def test_quick_exports_run_in_executorch_and_match_pytorch(run_cli, quick_exports, text, model):
    _validate(run_cli, quick_exports[model], model, text)


@needs_executorch
def test_the_lm_program_takes_every_length_up_to_its_own(quick_exports):
    """seq_len in [1, 64]: shorter sequences and other batches match PyTorch too."""
    from edgegate.models import load_model
    from edgegate.runtime import ExecuTorchRunner

    out = quick_exports["gla-lm:depth=1"]
    module = load_model("gla-lm:depth=1", out / "weights.pt").module.eval()
    rng = np.random.default_rng(0)
    with ExecuTorchRunner(out / "model.pte") as runner:
        for shape in [(1, 1), (3, 17), (2, 64), (11, 40)]:  # 11 rows: past the batch bound
            tokens = rng.integers(0, 256, size=shape).astype(np.int64)
            got = runner.run({"tokens": tokens})["logits"]
            with torch.no_grad():
                want = module(torch.from_numpy(tokens)).numpy()
            np.testing.assert_allclose(got, want, atol=1e-4 * max(1.0, np.abs(want).max()))


@needs_executorch
def test_bench_reports_executorch_latency_on_the_asked_threads(run_cli, quick_exports):
    timed = run_cli("bench", quick_exports["gla-lm:depth=1"], "--runs", "5", "--threads", "1",
                    "--json")  # fmt: skip
    assert timed.code == 0, timed.stderr
    result = timed.json()
    assert result["runtime"] == "executorch" and result["threads"] == 1
    assert result["latency_ms"]["p50"] > 0 and result["batch"] == 1


@needs_executorch
@slow
@pytest.mark.parametrize("model", list(ZOO))
def test_zoo_model_exports_runs_in_executorch_and_matches_pytorch(run_cli, tmp_path, text, model):
    out = tmp_path / "et"
    exported = run_cli("export", model, "--target", "executorch", "-o", out, *ZOO[model])
    assert exported.code == 0, exported.stderr
    result = _validate(run_cli, out, model, text)
    if model == "gc-mobilenet":
        assert {"stage1.pte", "stage2.pte"} <= set(read_manifest(out).files)
        assert result["two_stage"]["samples"] > 0


INT8_MODELS = {  # the acceptance's: at most 0.5 top-1 points lost on the digits test split
    "mobilenet-v3-se": [],
    "gc-mobilenet": [],
}


@needs_executorch
@slow
@pytest.mark.parametrize("model", list(INT8_MODELS))
def test_int8_loses_at_most_half_a_point(run_cli, capsys, tmp_path, model):
    out = tmp_path / "et8"
    result = run_cli(
        "export", model, "--target", "executorch", "--int8", "--max-drop", "0.5", "-o", out,
        "--json",
    )  # fmt: skip
    assert result.code == 0, (result.stdout, result.stderr)
    report = result.json()
    accuracy = report["accuracy"]
    with capsys.disabled():  # run_cli captures stdout; the figures belong in the log
        print(
            f"{model} INT8: float {accuracy['float']['top1']} / pt2e {accuracy['ptq']['top1']} / "
            f".pte {accuracy['int8_onnx']['top1']} top-1 (drop {report['drop_points']})"
        )
    assert report["passed"] and report["drop_points"] <= 0.5
    assert report["quant"]["profile"] == "executorch"
    assert report["activation_quantizers"] > 0
    manifest = read_manifest(out)
    assert manifest.precision == "int8" and "model.int8.pt2" in manifest.files
    verdict = run_cli("validate", out, "--parity-samples", "64", "--json")
    assert verdict.code == 0, (verdict.stdout, verdict.stderr)
    if model == "gc-mobilenet":
        assert report["gate_flip_rate"]["onnx_vs_float"] <= 2.0


@needs_executorch
@slow
def test_quantize_with_the_executorch_profile(run_cli, tmp_path, text):
    """`quantize --profile executorch` takes the same path as `export --int8`, for an LM too
    (its scans stay float)."""
    out = tmp_path / "q"
    result = run_cli(
        "quantize", "gla-lm:depth=1", "--profile", "executorch", "--seq-len", "32",
        "--calib-samples", "8", "--data", text, "-o", out, "--json",
    )  # fmt: skip
    assert result.code == 0, (result.stdout, result.stderr)
    report = result.json()
    assert report["target"] == "executorch" and report["passed"]
    assert {"model.int8.pte", "model.int8.pt2", "report.json"} <= set(report["files"])
    verdict = run_cli("validate", out, "--parity-samples", "16", "--data", text)
    assert verdict.code == 0, verdict.stderr


# --- bad input: one line, exit 2, nothing written, no export started ---------------------


@pytest.fixture
def no_export(monkeypatch):
    """The ExecuTorch export is the expensive work: a refusal must come before it."""

    def forbidden(*args, **kwargs):
        raise AssertionError("the export started before the input was refused")

    monkeypatch.setattr("edgegate.targets.executorch.export_pte", forbidden)


@pytest.fixture
def no_work(monkeypatch):
    """Loading the model is the first work of export and quantize: forbid it."""

    def forbidden(*args, **kwargs):
        raise AssertionError("the stage started work before rejecting its input")

    for stage in ("export", "quantize"):
        monkeypatch.setattr(f"edgegate.pipeline.{stage}.load_model", forbidden)


@needs_executorch
@pytest.mark.parametrize(
    "args, fragment",
    [
        (["gla-lm:depth=1", "--seq-len", "1100"], "beyond the 1024"),
        (["gdn-lm:depth=1", "--seq-len", "2048"], "--seq-len 1024 or less"),
        (
            ["tests.targets.custom_op_model:build", "--trust-code", "--task", "image"],
            "edgegate_tests::mystery has no ExecuTorch kernel",
        ),
    ],
)
def test_what_the_target_cannot_take_is_refused_before_export(
    run_cli, no_export, tmp_path, args, fragment
):
    out = tmp_path / "et"
    assert_one_line_error(run_cli("export", *args, "--target", "executorch", "-o", out), fragment)
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["export", "qvit", "-t", "executorch", "--int8", "--qat-epochs", "1"], "--qat-epochs"),
        (["quantize", "qvit", "--profile", "executorch", "--report"], "--report does not apply"),
        (["quantize", "qvit", "--profile", "executorch", "-m", "percentile"], "percentile"),
        (["export", "qvit", "-t", "executorch", "--precision", "fp16"], "exports fp32"),
    ],
)
def test_options_the_toolchain_lacks_are_refused_before_work(
    run_cli, no_work, tmp_path, args, fragment
):
    out = tmp_path / "et"
    assert_one_line_error(run_cli(*args, "-o", out), fragment)
    assert not out.exists()


def _cli(args: list[str], without: str | None = None, view: Path | None = None):
    """The real CLI in a fresh Python, whose stderr (native logs included) is all captured.

    With ``without``, that distribution is not installed there: its site-packages folder is
    replaced on ``sys.path`` by ``view``, a folder of links to everything else in it.
    """
    prelude = ""
    if without:
        prelude = (
            "import os, sys\n"
            "site = next(p for p in sys.path if p.endswith('site-packages'))\n"
            f"view = {str(view)!r}\n"
            "os.makedirs(view, exist_ok=True)\n"
            "for entry in os.listdir(site):\n"
            f"    if entry.split('-')[0].split('.')[0] != {without!r}:\n"
            "        os.symlink(os.path.join(site, entry), os.path.join(view, entry))\n"
            "sys.path[sys.path.index(site)] = view\n"
        )
    code = prelude + "import sys\nfrom edgegate.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=300
    )


def _one_line(proc: subprocess.CompletedProcess, code: int, *fragments: str) -> None:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == code, proc.stderr
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_without_executorch_export_exits_3_naming_the_extra(tmp_path):
    """In a Python that cannot import executorch (as after a plain `pip install edgegate-nn`)."""
    out = tmp_path / "et"
    args = ["export", "qvit", "--target", "executorch", "-o", str(out)]
    proc = _cli(args, without="executorch", view=tmp_path / "site-packages")
    _one_line(proc, 3, "executorch", "pip install 'edgegate-nn[executorch]'")
    assert not out.exists()


@needs_executorch
def test_a_corrupt_program_is_one_line_with_no_native_log(tmp_path, capfd):
    """ExecuTorch logs its load failure on stderr from C++ (file descriptor 2, which capfd
    sees); the CLI says it in its one line."""
    from edgegate.cli import main

    path = tmp_path / "broken.pte"
    path.write_bytes(b"\x00" * 64)
    code = main(["bench", str(path), "--runs", "1"])
    captured = capfd.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, captured.err
    assert "broken.pte" in lines[0] and "not a loadable ExecuTorch program" in lines[0]


def test_the_targets_table_lists_executorch(run_cli):
    listed = run_cli("targets", "--json")
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert rows["executorch"]["default_profile"] == "executorch"
    assert rows["executorch"]["install"] == "pip install 'edgegate-nn[executorch]'"
    assert rows["executorch"]["available"] is HAVE_EXECUTORCH


class _SplitGate(torch.nn.Module):
    """A projection split in two along its channels, as transformers' gated blocks do
    (`torch.split` of a [batch, seq, 2C] activation)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(8, 16)

    def forward(self, x):
        value, gate = torch.split(self.proj(x), [8, 8], dim=-1)
        return value * torch.sigmoid(gate)


class _BatchAsInt(torch.nn.Module):
    """Reads its batch as a Python int: torch.export fixes it, and the program takes one
    batch size."""

    def forward(self, x):
        return (x * 2).reshape(int(x.shape[0]), -1)


@needs_executorch
def test_a_split_keeps_batch_and_length_dynamic(tmp_path):
    """ExecuTorch 1.5.1's edge verifier guards the first dim of a split's first piece to its
    traced size (it calls len() on it), which fixed every dim of transformers' LMs; splits are
    lowered as slices instead, and the program runs at other batches and lengths."""
    from edgegate.exporters.executorch import export_pte
    from edgegate.runtime import ExecuTorchRunner

    module = _SplitGate().eval()
    written = export_pte(
        module, (torch.randn(2, 12, 8),), tmp_path / "split.pte", input_names=["x"],
        output_names=["y"], dynamic_dims=[(0, 1)],
    )  # fmt: skip
    assert written.static_dims == []
    assert written.inputs[0].shape == ["batch", "x_dim1", 8]
    assert written.ranges == {"x": {"batch": [1, 8], "x_dim1": [1, 12]}}  # memory planned
    with ExecuTorchRunner(written.path) as runner:
        for shape in [(1, 1, 8), (3, 5, 8), (8, 12, 8)]:
            feed = torch.randn(*shape)
            got = runner.run({"x": feed.numpy()})["y"]
            with torch.no_grad():
                np.testing.assert_allclose(got, module(feed).numpy(), atol=1e-5)


@needs_executorch
def test_a_fixed_batch_is_recorded_at_its_size_in_the_program(tmp_path):
    """The manifest's shape is the program's: a batch the plan fixed is 1 (what the program
    takes), not the example's batch."""
    from edgegate.exporters.executorch import export_pte
    from edgegate.runtime import ExecuTorchRunner

    written = export_pte(
        _BatchAsInt(), (torch.randn(4, 6, 8),), tmp_path / "int.pte", input_names=["x"],
        output_names=["y"], dynamic_dims=[(0,)],
    )  # fmt: skip
    assert written.inputs[0].shape == [1, 6, 8]
    assert [line.split(":")[0] for line in written.static_dims] == ["x.batch fixed at 1"]
    with ExecuTorchRunner(written.path) as runner:  # the program's own record says so too
        assert runner.input_specs()[0].shape == (1, 6, 8)
