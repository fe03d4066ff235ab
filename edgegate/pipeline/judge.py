"""The judge stage: a device's results.json against the expected outputs its bundle carries.

Same verdicts as validate: exit 0 when every tolerance holds, 1 when one breaks, 2 when the
bundle or the results cannot be trusted (a hash that does not match, results from another
bundle, an output missing or of the wrong shape). The model files are the exception: they are
what the device ran, so a model changed there is judged by its outputs, with a warning.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from edgegate.errors import BadInput
from edgegate.manifest import sha256_file
from edgegate.outputs import check_output_file, make_parents
from edgegate.pipeline.bundle import (
    BUNDLE_FORMAT,
    BUNDLE_JSON,
    EXPECTED,
    INPUTS,
    LABELS,
    RESULTS_JSON,
    RUN_SCRIPT,
    bundle_id,
)
from edgegate.pipeline.tasks import TASKS, TaskData
from edgegate.pipeline.validate import junit_on_error
from edgegate.runtime.bundle_run import RESULTS_FORMAT  # what run.py writes
from edgegate.validate import report as reports
from edgegate.validate.parity import Tolerance, compare_outputs


def read_bundle(folder: Path) -> dict[str, Any]:
    """bundle.json, with every file it lists present and, except the model files, unchanged."""
    path = folder / BUNDLE_JSON
    if not path.is_file():
        raise BadInput(f"'{folder}' has no {BUNDLE_JSON}: is it an edgegate bundle?")
    try:
        record = json.loads(path.read_text())
        files, model_files = dict(record["files"]), list(record["model_files"])
    except (ValueError, KeyError, TypeError) as exc:
        raise BadInput(f"'{path}' is not a valid bundle record ({exc})") from None
    if record.get("format") != BUNDLE_FORMAT:
        raise BadInput(f"'{path}' is not an {BUNDLE_FORMAT} record")
    for name, digest in files.items():
        file = folder / name
        if not file.exists():
            raise BadInput(f"'{folder}' lacks '{name}', which {BUNDLE_JSON} lists")
        if name not in model_files and sha256_file(file) != digest:
            raise BadInput(f"'{file}' does not match the SHA-256 in {BUNDLE_JSON}: tampered?")
    if bundle_id(files, model_files) != record.get("id"):
        raise BadInput(f"'{path}' does not match its own file list: tampered?")
    for needed in (INPUTS, EXPECTED, LABELS, RUN_SCRIPT):
        if needed not in files:
            raise BadInput(f"'{path}' lists no {needed}")
    return record


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def read_results(path: Path, record: dict[str, Any], expected: dict[str, np.ndarray]):
    """The device's results: its outputs as arrays (shapes checked), and the rest as given."""
    if not path.is_file():
        raise BadInput(f"'{path}' is missing: run `python3 {RUN_SCRIPT}` in the bundle first")
    try:
        results = json.loads(path.read_text())
        device_outputs = results["outputs"]
    except (ValueError, KeyError, TypeError) as exc:
        raise BadInput(f"'{path}' is not a valid results file ({exc})") from None
    if results.get("format") != RESULTS_FORMAT:
        raise BadInput(f"'{path}' is not an {RESULTS_FORMAT} file")
    if results.get("bundle_id") != record["id"]:
        raise BadInput(
            f"'{path}' is from bundle {results.get('bundle_id')}, not {record['id']}: "
            "results from another bundle"
        )
    outputs = {}
    for name, want in expected.items():
        if name not in device_outputs:
            raise BadInput(f"'{path}' has no output '{name}'")
        try:
            got = np.asarray(device_outputs[name]["data"], dtype=np.float32)
        except (ValueError, TypeError, KeyError):
            raise BadInput(f"'{path}': output '{name}' is not a numeric array") from None
        if got.shape != want.shape:
            raise BadInput(
                f"'{path}': output '{name}' has shape {list(got.shape)}, "
                f"expected {list(want.shape)}"
            )
        outputs[name] = got
    return results, outputs


def replay(inputs: np.ndarray, outputs: dict[str, np.ndarray], names: list[str]):
    """Recorded outputs as the predict callable the task scorers take: it serves rows in order
    and checks that each batch asked for is the one that was run."""
    cursor = 0

    def predict(batch: np.ndarray) -> list[np.ndarray]:
        nonlocal cursor
        rows = slice(cursor, cursor + len(batch))
        if not np.array_equal(batch, inputs[rows]):
            raise RuntimeError("the scorer asked for inputs the device did not run")
        cursor = rows.stop
        return [outputs[name][rows] for name in names]

    return predict


def task_accuracy(
    record: dict[str, Any],
    inputs: np.ndarray,
    labels: dict[str, np.ndarray],
    outputs: dict[str, np.ndarray],
) -> dict[str, Any]:
    """The task's metrics (top-1, gate metrics, perplexity) of recorded outputs on the
    bundle's labelled samples."""
    task = TASKS[record["task"]]
    names = list(record["outputs"])
    if "windows" in labels:  # an LM scores whole windows: inputs plus next tokens
        data = TaskData(task.name, _tensor(labels["windows"]), None, record["data"])
        rows = labels["windows"][:, :-1]
    else:
        data = TaskData(task.name, _tensor(inputs), _tensor(labels["labels"]), record["data"])
        rows = inputs
    settings = SimpleNamespace(**record.get("settings", {}))  # what the scorers read of a model
    return task.score(replay(rows, outputs, names), data, settings)


def _tensor(array: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(array))


def judge(
    bundle_dir: Path, *, results: Path | None = None, junit: Path | None = None
) -> dict[str, Any]:
    """Judge a bundle's device results on the host; with ``junit``, also as JUnit XML."""
    if junit is not None:
        check_output_file(junit, "--junit file", (".xml",))
        make_parents(junit)
    with junit_on_error(junit, "edgegate.judge"):
        verdict = _judge(Path(bundle_dir), results)
    if junit is not None:
        cases = reports.parity_cases(verdict)
        if verdict.get("latency_ms"):
            cases.append(("latency", True, "", verdict["latency_ms"]["p50"] / 1e3))
        reports.write_junit(junit, "edgegate.judge", cases)
    return verdict


def _judge(folder: Path, results_path: Path | None) -> dict[str, Any]:
    record = read_bundle(folder)
    expected = _load_npz(folder / EXPECTED)
    inputs = _load_npz(folder / INPUTS)[record["inputs"][0]["name"]]
    labels = _load_npz(folder / LABELS)
    path = results_path or folder / RESULTS_JSON
    results, outputs = read_results(path, record, expected)
    tolerance = Tolerance(**record["tolerance"])
    report = compare_outputs(
        expected,
        outputs,
        tolerance,
        gate_outputs=set(record["gate_outputs"]),
        classifier_outputs={record["classifier_output"]},
    )
    warnings = []
    ran = results.get("model_sha256") or {}
    changed = [n for n in record["model_files"] if n in ran and ran[n] != record["files"][n]]
    if changed:
        warnings.append(
            f"the device ran {', '.join(changed)} with a SHA-256 other than the bundled one"
        )
    accuracy = {
        "reference": task_accuracy(record, inputs, labels, expected),
        "candidate": task_accuracy(record, inputs, labels, outputs),
    }
    return {
        "bundle": os.fspath(folder),
        "results": os.fspath(path),
        "id": record["id"],
        "reference": record["model"],
        "target": record["target"],
        "runtime": results.get("runtime", {}).get("name", record["runtime"]),
        "runtime_version": results.get("runtime", {}).get("version"),
        "device": results.get("device"),
        "data": record["data"],
        "parity_samples": int(record["samples"]),
        **report.to_dict(),
        "accuracy": accuracy,
        "latency_ms": results.get("latency_ms"),
        "warnings": warnings,
    }
