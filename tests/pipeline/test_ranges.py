"""Exports are checked over the ranges they declare (issue: a graph wrong at another size must
never pass): user models that break away from their traced shape, through the CLI."""

from __future__ import annotations

import json
import shutil

import onnx
import pytest

from edgegate.manifest import read_manifest, sha256_file, write_manifest

TRAPS = "tests.pipeline.shape_traps"
ORT_TARGETS = ["onnx", "onnxruntime", "tensorrt"]  # all run here in onnxruntime


def _export(run_cli, out, factory: str, task: str, *extra: str):
    result = run_cli(
        "export", f"{TRAPS}:{factory}", "--trust-code", "--task", task, "-o", out, "--json",
        *extra,
    )  # fmt: skip
    assert result.code == 0, result.stderr
    return result


def _record(folder, stem="model"):
    return read_manifest(folder).ranges[stem]


@pytest.mark.parametrize("target", ORT_TARGETS)
def test_a_python_chunk_loop_gets_its_length_fixed_with_the_reason(run_cli, tmp_path, target):
    out = tmp_path / "chunk"
    result = _export(run_cli, out, "chunk_lm", "lm", "--seq-len", "64", "--target", target)
    record = _record(out)
    (fixed,) = record["fixed"]
    assert (fixed["name"], fixed["size"]) == ("seq_len", 64)
    assert "refused at seq_len=1" in fixed["reason"] and "wrong at seq_len=" in fixed["reason"]
    assert [r["name"] for r in record["ranges"]] == ["batch"]
    assert read_manifest(out).inputs[0].shape == ["batch", 64]
    assert any("seq_len fixed at 64" in line for line in result.stderr.splitlines())
    graph = onnx.load(out / "model.onnx").graph.input[0].type.tensor_type.shape
    assert [d.dim_param or d.dim_value for d in graph.dim] == ["batch", 64]  # the file says so
    check = run_cli("validate", out, "--trust-code", "--json")
    assert check.code == 0, check.stderr
    assert check.json()["ranges"]["model"]["passed"] is True


def test_a_batch_read_as_an_int_gets_the_batch_fixed_and_validates_in_batch_one_calls(
    run_cli, tmp_path
):
    out = tmp_path / "batch"
    _export(run_cli, out, "batch_cnn", "image")
    record = _record(out)
    (fixed,) = record["fixed"]
    assert (fixed["name"], fixed["size"]) == ("batch", 1)
    assert "Reshape" in fixed["reason"]
    assert {r["name"]: (r["min"], r["max"]) for r in record["ranges"]} == {
        "height": (16, 64),
        "width": (16, 64),
    }
    check = run_cli("validate", out, "--trust-code", "--json")  # 256 rows, one call each
    assert check.code == 0, check.stderr
    assert check.json()["parity_samples"] == 256
    bench = run_cli("bench", out, "--runs", "2", "--batch", "2")
    assert bench.code == 2 and "beyond what 'model.onnx' declares" in bench.stderr


def test_a_loop_free_model_keeps_every_range(run_cli, tmp_path):
    out = tmp_path / "plain"
    _export(run_cli, out, "plain_lm", "lm", "--seq-len", "64")
    record = _record(out)
    assert record["fixed"] == []
    assert {r["name"]: (r["min"], r["max"], r["checked"]) for r in record["ranges"]} == {
        "batch": (1, 8, [1, 2, 8]),
        "seq_len": (1, 128, [1, 64, 65, 128]),
    }


def test_validate_exits_1_naming_the_dim_and_size_where_a_graph_is_wrong(run_cli, tmp_path):
    """A graph that claims a range it does not hold (the chunk loop exported with its length
    dynamic, as a tool that never checked would leave it): validate must fail, not pass on the
    traced length alone."""
    from edgegate.exporters.onnx import auto_dynamic_shapes, export_onnx
    from edgegate.models import load_model

    out = tmp_path / "chunk"
    _export(run_cli, out, "chunk_lm", "lm", "--seq-len", "64")
    loaded = load_model(f"{TRAPS}:chunk_lm", trust_code=True)
    tokens = __import__("torch").randint(0, 256, (1, 64))
    export_onnx(
        loaded.module, (tokens,), out / "model.onnx", input_names=["tokens"],
        output_names=["logits"], dynamic_shapes=auto_dynamic_shapes((tokens,)),
    )  # fmt: skip
    manifest = read_manifest_unchecked(out)
    record = manifest.ranges["model"]
    record["ranges"].append(
        {"input": "tokens", "axis": 1, "name": "seq_len", "traced": 64, "min": 1, "max": 128}
    )
    record["fixed"] = []
    manifest.files["model.onnx"] = sha256_file(out / "model.onnx")
    write_manifest(out, manifest)
    plain = run_cli("validate", out, "--trust-code", "--json")
    assert plain.code == 1, plain.stderr
    report = plain.json()
    assert report["top1_agreement"] == 100.0  # right at the traced length...
    failures = report["failures"]  # ...and wrong or refused elsewhere
    assert any("seq_len=1:" in f and "refused" in f for f in failures), failures
    assert any("seq_len=128:" in f and "wrong" in f for f in failures), failures
    junit = tmp_path / "r.xml"
    assert run_cli("validate", out, "--trust-code", "--junit", junit).code == 1
    assert "seq_len=128" in junit.read_text()


def read_manifest_unchecked(folder):
    """The manifest without its hash check (the test replaces a file on purpose)."""
    from edgegate.manifest import Manifest

    raw = json.loads((folder / "manifest.json").read_text())
    from edgegate.manifest import InputSpec

    raw["inputs"] = [InputSpec(**spec) for spec in raw["inputs"]]
    return Manifest(**raw)


def test_an_export_wrong_at_its_own_traced_shape_exits_1_and_writes_nothing(
    run_cli, tmp_path, monkeypatch
):
    """The exporter's own fault is exit 1 (never blamed on the user's input as exit 2)."""
    from edgegate.targets import get_target

    target = get_target("onnx")
    real_export = type(target).export

    def corrupting_export(self, part, directory):
        written = real_export(self, part, directory)
        model = onnx.load(written.path)
        biggest = max(model.graph.initializer, key=lambda t: len(t.raw_data))
        array = onnx.numpy_helper.to_array(biggest) * 1.5
        biggest.CopyFrom(onnx.numpy_helper.from_array(array, biggest.name))
        onnx.save(model, written.path)
        return written

    monkeypatch.setattr(type(target), "export", corrupting_export)
    out = tmp_path / "broken"
    result = run_cli("export", f"{TRAPS}:plain_lm", "--trust-code", "--task", "lm", "-o", out)
    assert result.code == 1, result.stderr
    assert "disagrees with PyTorch at its traced shape" in result.stderr
    assert not out.exists()


@pytest.mark.parametrize("target", ["executorch", "coreml"])
def test_bounded_targets_fix_the_chunk_loop_and_validate(run_cli, tmp_path, target):
    out = tmp_path / target
    _export(run_cli, out, "chunk_lm", "lm", "--seq-len", "32", "--target", target)
    record = _record(out)
    assert [f["name"] for f in record["fixed"]] == ["seq_len"], record
    check = run_cli("validate", out, "--trust-code", "--json")
    assert check.code == 0, check.stderr


def test_zoo_export_copies_are_checked_and_recorded(run_cli, gc_export):
    """The zoo's own exports carry their ranges: every graph of gc-mobilenet, batch 1..8 and
    sides 32..64 (its total stride to twice the export's size)."""
    manifest = read_manifest(gc_export)
    assert set(manifest.ranges) == {"model", "stage1", "stage2"}
    for stem in ("model", "stage1"):
        spans = {r["name"]: (r["min"], r["max"]) for r in manifest.ranges[stem]["ranges"]}
        assert spans == {"batch": (1, 8), "height": (32, 64), "width": (32, 64)}, stem
    copy = shutil.copytree(gc_export, gc_export.parent / "copy")
    result = run_cli("validate", copy, "--json")
    assert result.code == 0, result.stderr
    assert set(result.json()["ranges"]) == {"model", "stage1", "stage2"}
