"""The bundle stage: an export packed for the device with everything needed to judge it later.

A bundle is one folder to copy to the device:

    run.py          runs the samples there (numpy + the device's runtime; no torch, no edgegate)
    bundle.json     target, runtime, input/output specs, tolerance, task settings, SHA-256s
    model/          the target's files (a TensorRT kit whole, since it builds on the device)
    inputs.npz      the samples, in the export's input precision
    expected.npz    the PyTorch reference's outputs on them (fake-quant for an INT8 export)
    labels.npz      labels (image tasks) or whole token windows (LMs) for task accuracy
    raw/            the same samples as raw little-endian files, for trtexec's --loadInputs

`run.py` writes ``results.json`` into the bundle; ``edgegate judge`` reads it back on the host.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from edgegate import __version__
from edgegate.atomic import atomic_write, staged_directory
from edgegate.errors import BadInput
from edgegate.jsonio import write_json
from edgegate.manifest import sha256_file
from edgegate.outputs import check_output_dir
from edgegate.pipeline.artifacts import open_artifact
from edgegate.pipeline.tasks import LanguageModelTask, Task
from edgegate.pipeline.validate import as_dtype, input_dtype, load_reference_side, reference_for
from edgegate.progress import SILENT, Progress
from edgegate.runtime import TorchRunner, bundle_run
from edgegate.runtime.bundle_run import BUNDLE_FORMAT  # the format run.py reads
from edgegate.validate.parity import Tolerance

BUNDLE_JSON = "bundle.json"
RUN_SCRIPT = "run.py"
RESULTS_JSON = "results.json"
MODEL_DIR = "model"
RAW_DIR = "raw"
INPUTS, EXPECTED, LABELS = "inputs.npz", "expected.npz", "labels.npz"
RUNNER_SOURCE = Path(bundle_run.__file__)  # copied into each bundle as run.py


def default_samples(kind: Task) -> int:
    """Enough images for a top-1 figure; few LM rows, each a whole sequence of decisions (their
    logits go back to the host as JSON)."""
    return 4 if isinstance(kind, LanguageModelTask) else 64


def _copy_into(source: Path, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():  # a Core ML .mlpackage is a folder
        shutil.copytree(source, destination)
    else:
        shutil.copy2(source, destination)


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_write(path) as fh:
        np.savez(fh, **arrays)


def bundle_id(files: dict[str, str], model_files: list[str]) -> str:
    """Names the judged content (samples, expected outputs, labels, scripts): a results.json
    quotes it, so results from another bundle are refused."""
    lines = sorted(f"{n}:{d}" for n, d in files.items() if n not in model_files)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def bundle(
    export_dir: Path,
    output_dir: Path,
    *,
    samples: int | None = None,
    data: str | None = None,
    checkpoint: Path | None = None,
    trust_code: bool = False,
    progress: Progress = SILENT,
) -> dict[str, Any]:
    """Pack ``export_dir`` with ``samples`` test inputs and PyTorch's outputs on them."""
    if samples is not None and samples < 1:
        raise BadInput(f"--samples must be at least 1, got {samples}")
    output_dir = check_output_dir(output_dir, "bundle folder")
    if output_dir.is_dir() and any(output_dir.iterdir()):
        raise BadInput(f"bundle folder '{output_dir}' already holds files: give a new folder")
    if Path(export_dir).is_file():
        raise BadInput(f"'{export_dir}' is a model file: bundle takes its export folder")
    art = open_artifact(export_dir)
    if art.directory is None or art.manifest is None:
        raise BadInput(f"'{export_dir}' is a bare model file: bundle takes an export folder")
    if art.streaming:
        raise BadInput(
            f"'{export_dir}' is a streaming export (states in and out), which bundle does not "
            "take yet: run.py feeds whole windows; use `edgegate validate` on the host"
        )
    target, manifest = art.target, art.manifest
    if not target.device_runtime:
        raise BadInput(f"target '{target.name}' names no device runtime to bundle for")
    loaded, kind, eval_data = load_reference_side(
        art, reference=None, checkpoint=checkpoint, data=data, trust_code=trust_code, task=None
    )
    available = kind.model_inputs(eval_data).numpy()
    count = samples or min(default_samples(kind), len(available))
    if count > len(available):
        raise BadInput(f"--samples {count}: the data '{eval_data.source}' has {len(available)}")
    inputs = np.ascontiguousarray(available[:count])
    dtype = input_dtype(art, kind.input_name)
    with progress.phase("load reference"):
        reference_module = reference_for(art, loaded)
    with (
        progress.phase(f"reference outputs on {count} samples"),
        TorchRunner(reference_module, [kind.input_name], list(kind.output_names)) as ref,
    ):
        expected = {k: v.astype(np.float32) for k, v in ref.run({kind.input_name: inputs}).items()}
    feed = as_dtype(inputs, dtype)
    model_file = manifest.extra.get("model_file", art.model_path.name)
    device_files = target.device_files(manifest, model_file)
    with staged_directory(output_dir) as stage, progress.phase(f"write {output_dir}"):
        for relative in device_files:
            _copy_into(art.directory / relative, stage / MODEL_DIR / relative)
        _save_npz(stage / INPUTS, {kind.input_name: feed})
        _save_npz(stage / EXPECTED, expected)
        if eval_data.labels is not None:
            _save_npz(stage / LABELS, {"labels": eval_data.labels.numpy()[:count]})
        else:  # an LM's windows: inputs plus the next-token targets
            _save_npz(stage / LABELS, {"windows": eval_data.inputs.numpy()[:count]})
        raw_inputs = _write_raw(stage, kind.input_name, feed) if target.raw_device_inputs else {}
        shutil.copy2(RUNNER_SOURCE, stage / RUN_SCRIPT)
        model_paths = [f"{MODEL_DIR}/{relative}" for relative in device_files]
        files = {m: sha256_file(stage / m) for m in model_paths}  # a folder is one entry
        for path in sorted(stage.rglob("*")):
            relative = path.relative_to(stage).as_posix()
            if path.is_file() and not any(relative.startswith(m + "/") for m in model_paths):
                files.setdefault(relative, sha256_file(path))
        record = {
            "format": BUNDLE_FORMAT,
            "id": bundle_id(files, model_paths),
            "edgegate_version": __version__,
            "model": loaded.spec,
            "target": target.name,
            "runtime": target.device_runtime,
            "precision": art.precision,
            "task": kind.name,
            "data": eval_data.source,
            "samples": count,
            "model_file": f"{MODEL_DIR}/{model_file}",
            "model_files": model_paths,
            "inputs": [
                {"name": kind.input_name, "dtype": feed.dtype.name, "shape": [1, *feed.shape[1:]]}
            ],  # fmt: skip  (one sample per run)
            "outputs": list(kind.output_names),
            "classifier_output": kind.classifier_output,
            "gate_outputs": sorted(kind.gate_outputs),
            "settings": kind.settings(loaded.module),
            "tolerance": asdict(Tolerance.for_precision(art.precision)),
            "raw_inputs": raw_inputs,
            **_prefixed(target.device_record(manifest, model_file)),
            "files": files,
        }
        write_json(stage / BUNDLE_JSON, record)
    return {
        "bundle": os.fspath(output_dir),
        "id": record["id"],
        "target": target.name,
        "runtime": target.device_runtime,
        "precision": art.precision,
        "samples": count,
        "data": eval_data.source,
        "files": sorted([*files, BUNDLE_JSON]),
        "run": f"python3 {RUN_SCRIPT}",
    }


def _prefixed(record: dict[str, Any]) -> dict[str, Any]:
    """A target's record with its paths made relative to the bundle (under model/)."""
    out = {}
    for key, block in record.items():
        out[key] = {k: f"{MODEL_DIR}/{v}" for k, v in block.items()}
    return out


def _write_raw(stage: Path, name: str, feed: np.ndarray) -> dict[str, dict[str, str]]:
    """One little-endian file per sample (trtexec's --loadInputs): {sample: {input: path}}."""
    folder = stage / RAW_DIR
    folder.mkdir()
    written = {}
    for i in range(len(feed)):
        path = folder / f"sample_{i}.{name}.bin"
        row = np.ascontiguousarray(feed[i : i + 1])
        with atomic_write(path) as fh:
            fh.write(row.astype(row.dtype.newbyteorder("<")).tobytes())
        written[str(i)] = {name: path.relative_to(stage).as_posix()}
    return written
