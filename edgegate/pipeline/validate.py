"""The validate stage: an export's outputs against its PyTorch reference, plus task accuracy.

An fp32 export is judged against the float model; an INT8 export against the fake-quant model
it was exported from (within a few quantization steps), with the float accuracy beside it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgegate.errors import BadInput, EdgegateError
from edgegate.models import LoadedModel, load_model
from edgegate.outputs import check_output_file, make_parents
from edgegate.pipeline.artifacts import Artifact, open_artifact
from edgegate.pipeline.ranges import run_check
from edgegate.pipeline.streaming import REPORT_PIECES, Streaming
from edgegate.pipeline.tasks import GatedCompressionTask, Predict, Task, TaskData, resolve_task
from edgegate.pipeline.weights import checkpoint_for
from edgegate.progress import SILENT, Progress
from edgegate.runtime import Runner, TorchRunner, TwoStageRunner
from edgegate.validate import report as reports
from edgegate.validate.localize import NotLocalizable
from edgegate.validate.localize import localize as locate
from edgegate.validate.parity import Tolerance, compare_outputs
from edgegate.validate.ranges import resize

INT8_STATE = "model.int8.pt"  # the fake-quant state an INT8 export carries
W4_STATE = "model.w4.pt"  # the W4 (weight-only INT4) fake-quant state a W4 export carries


def runner_predict(runner: Runner, input_name: str, dtype: str | None = None):
    """A runner as the predict callable the task scorers take; float batches are cast to
    ``dtype`` (an fp16 export's inputs)."""

    def predict(batch: np.ndarray) -> list[np.ndarray]:
        return list(runner.run({input_name: as_dtype(batch, dtype)}).values())

    return predict


def as_dtype(batch: np.ndarray, dtype: str | None) -> np.ndarray:
    """``batch`` in the export's input precision (floats only; token ids stay integers)."""
    if dtype is None or batch.dtype.kind != "f" or batch.dtype.name == dtype:
        return np.ascontiguousarray(batch)
    return np.ascontiguousarray(batch.astype(dtype))


def input_dtype(art: Artifact, name: str) -> str | None:
    return next((spec.dtype for spec in art.input_specs if spec.name == name), None)


def reference_for(art: Artifact, loaded: LoadedModel):
    """The module an artifact is judged against: for an INT8 export, the quantized model it was
    exported from (the target's own, e.g. ExecuTorch's PT2E model, else brevitas' fake-quant
    model, which loads only then); a W4 export, its W4 fake-quant model; else the float model
    itself."""
    w4_state = art.part(W4_STATE)
    if w4_state is not None:
        from edgegate.quant.weight_only import load_w4_state

        return load_w4_state(w4_state, loaded.module)
    if art.precision != "int8":
        return loaded.module
    native = art.part(art.target.int8_reference) if art.target.int8_toolchain else None
    if native is not None:
        return art.target.load_int8_reference(native)
    state = art.part(INT8_STATE)
    if state is None:
        return loaded.module
    from edgegate.quant.state import load_fake_quant

    return load_fake_quant(state, loaded.module)


def load_reference_side(
    art: Artifact,
    *,
    reference: str | None,
    checkpoint: Path | None,
    data: str | None,
    trust_code: bool,
    task: str | None,
) -> tuple[LoadedModel, Task, TaskData]:
    """The model an artifact was exported from (the weights its manifest recorded, unless
    ``reference``/``checkpoint`` say otherwise), its task, and the task's test split at the
    export's geometry: what validate and bundle judge a target's outputs against."""
    spec = reference or (art.manifest.model if art.manifest else None)
    if spec is None:
        raise BadInput(f"'{art.model_path}' has no manifest: pass --reference MODEL")
    weights = checkpoint_for(art.manifest, art.directory, checkpoint) if not reference else None
    loaded = load_model(spec, weights or checkpoint, trust_code=trust_code)
    kind = resolve_task(loaded, task or (art.manifest.task if art.manifest else None))
    eval_data = kind.load(loaded, data, "test", **kind.geometry_options(art.example_shape))
    return loaded, kind, eval_data


@contextlib.contextmanager
def junit_on_error(junit: Path | None, suite: str) -> Iterator[None]:
    """A bad input still leaves CI a JUnit file that says what was wrong."""
    try:
        yield
    except EdgegateError as exc:
        if junit is not None:
            reports.write_junit(junit, suite, [("input", False, str(exc), 0.0)])
        raise


def validate(
    artifact: Path,
    *,
    reference: str | None = None,
    checkpoint: Path | None = None,
    data: str | None = None,
    parity_samples: int = 256,
    threads: int | None = None,
    trust_code: bool = False,
    task: str | None = None,
    with_accuracy: bool = True,
    junit: Path | None = None,
    localize: bool = False,
    progress: Progress = SILENT,
) -> dict[str, Any]:
    """Parity (and accuracy) of an exported artifact against its PyTorch reference.

    With ``junit`` the verdict is also written as JUnit XML, including a bad-input verdict.
    When parity fails, or always with ``localize``, ``result["localization"]`` says which
    module of the reference the export first departs from.
    """
    if junit is not None:
        check_output_file(junit, "--junit file", (".xml",))
        make_parents(junit)
    with junit_on_error(junit, "edgegate.validate"):
        result = _validate(
            artifact,
            reference=reference,
            checkpoint=checkpoint,
            data=data,
            parity_samples=parity_samples,
            threads=threads,
            trust_code=trust_code,
            task=task,
            with_accuracy=with_accuracy,
            localize=localize,
            progress=progress,
        )
    if junit is not None:
        reports.write_junit(junit, "edgegate.validate", reports.parity_cases(result))
    return result


def _validate(
    artifact: Path,
    *,
    reference: str | None,
    checkpoint: Path | None,
    data: str | None,
    parity_samples: int,
    threads: int | None,
    trust_code: bool,
    task: str | None,
    with_accuracy: bool,
    progress: Progress,
    localize: bool = False,
) -> dict[str, Any]:
    if parity_samples < 1:
        raise BadInput(f"--parity-samples must be at least 1, got {parity_samples}")
    art = open_artifact(artifact)
    streaming = art.streaming
    if streaming and localize:
        raise BadInput(
            f"--localize does not apply to '{artifact}', a streaming export (states in and "
            "out): its layers are judged per call, not per window"
        )
    art.target.check_available()
    loaded, kind, eval_data = load_reference_side(
        art, reference=reference, checkpoint=checkpoint, data=data, trust_code=trust_code,
        task=task,
    )  # fmt: skip
    if streaming:
        return _validate_stream(
            artifact, art, loaded, kind, eval_data, parity_samples, threads, with_accuracy,
            progress,
        )  # fmt: skip
    inputs = kind.model_inputs(eval_data).numpy()
    feed = {kind.input_name: np.ascontiguousarray(inputs[: kind.parity_rows(parity_samples)])}
    with progress.phase("load reference"):
        reference_module = reference_for(art, loaded)
    outputs = list(kind.output_names)
    with (
        TorchRunner(reference_module, [kind.input_name], outputs) as ref,
        art.runner(threads=threads) as cand,
    ):
        with progress.phase(f"parity on {len(feed[kind.input_name])} samples"):
            dtype = input_dtype(art, kind.input_name)
            cand_feed = {name: as_dtype(batch, dtype) for name, batch in feed.items()}
            ref_out, cand_out = ref.run(feed), cand.run(cand_feed)
        report = compare_outputs(
            ref_out,
            cand_out,
            Tolerance.for_precision(art.precision),
            gate_outputs=kind.gate_outputs,
            classifier_outputs={kind.classifier_output},
        )
        subjects = range_subjects(art, kind, reference_module, inputs)
        ranges = check_declared_ranges(art, subjects, kind.gate_outputs, threads, progress)
        accuracy_block = None
        if with_accuracy:
            accuracy_block = _accuracy(
                kind,
                eval_data,
                loaded,
                reference_module,
                runner_predict(ref, kind.input_name),
                runner_predict(cand, kind.input_name, dtype),
                progress,
            )
    result = {
        "artifact": os.fspath(artifact),
        "reference": loaded.spec,
        "target": art.target.name,
        "runtime": cand.name,
        "data": eval_data.source,
        "parity_samples": int(len(feed[kind.input_name])),
        **with_ranges(report.to_dict(), ranges),
        "accuracy": accuracy_block,
    }
    if localize or not report.passed:
        with progress.phase("localize the first divergent layer"):
            result["localization"] = localization(art, reference_module, feed, cand_feed)
    if isinstance(kind, GatedCompressionTask) and art.has_two_stages():
        with progress.phase("two-stage system"):
            result["two_stage"] = two_stage_metrics(art, eval_data, loaded, threads)
    result.update(_host_checks(art, feed, kind, threads, progress))
    return result


def _validate_stream(
    artifact: Path,
    art: Artifact,
    loaded: LoadedModel,
    kind: Task,
    data: TaskData,
    parity_samples: int,
    threads: int | None,
    with_accuracy: bool,
    progress: Progress,
) -> dict[str, Any]:
    """A streaming export (states in and out) run as a stream runs it: each window fed in
    ``REPORT_PIECES`` calls from zero states, each call's new states fed back as the next
    call's. Judged against the fake-quant streaming step (a float export: the float step) over
    whole windows in one pass, which a stream must equal, with the precision's tolerance and
    the task's accuracy beside it."""
    stream = Streaming(loaded)
    windows = kind.model_inputs(data).numpy()
    rows = np.ascontiguousarray(windows[: kind.parity_rows(parity_samples)])
    with progress.phase("load reference"):
        reference_module = reference_for(art, loaded)
    # a float export (`export --streaming`) is judged against the LM's own streaming step
    step = stream.module() if reference_module is loaded.module else reference_module
    reference = stream.torch_predict(step)
    with art.runner(threads=threads) as cand:
        candidate = stream.runner_predict(cand, REPORT_PIECES)
        with progress.phase(f"parity on {len(rows)} windows, each in {REPORT_PIECES} calls"):
            name = kind.classifier_output
            report = compare_outputs(
                {name: reference(rows)[0]},
                {name: candidate(rows)[0]},
                Tolerance.for_precision(art.precision),
                classifier_outputs={name},
            )
        inputs, outputs = stream.names()
        stem = art.stem_of(art.model_path)
        base = stream.zero_feed(np.ascontiguousarray(windows[: art.target.max_batch]))
        subject = RangeSubject(step, inputs, outputs, base)
        ranges = check_declared_ranges(art, {stem: subject}, frozenset(), threads, progress)
        accuracy_block = None
        if with_accuracy:
            accuracy_block = _accuracy(
                kind, data, loaded, reference_module, reference, candidate, progress
            )
    result = {
        "artifact": os.fspath(artifact),
        "reference": loaded.spec,
        "target": art.target.name,
        "runtime": cand.name,
        "data": data.source,
        "parity_samples": int(len(rows)),
        "fed": f"each window in {REPORT_PIECES} calls, new states fed back as the next states",
        **with_ranges(report.to_dict(), ranges),
        "accuracy": accuracy_block,
    }
    result.update(_host_checks(art, stream.zero_feed(rows), kind, threads, progress))
    return result


@dataclass(frozen=True)
class RangeSubject:
    """What one graph of an export is checked over its ranges with: the reference module, its
    input and output names, and inputs at the export's geometry (rows of real data)."""

    module: Any
    input_names: list[str]
    output_names: list[str]
    feed: dict[str, np.ndarray]
    classifier_outputs: frozenset[str] = frozenset()


def range_subjects(
    art: Artifact, kind: Task, reference_module, inputs: np.ndarray
) -> dict[str, RangeSubject]:
    """The subject of each graph whose ranges the manifest records: the model, and a float
    gated-compression export's two stages (stage 2 fed stage 1's features)."""
    stems = list(art.manifest.ranges) if art.manifest else []
    rows = torch.from_numpy(np.ascontiguousarray(inputs[: art.target.max_batch]))
    if art.precision != "int8" and set(stems) - {"model"}:
        parts = {p.stem: p for p in kind.export_parts(reference_module, (rows,), {})}
    else:
        parts = {}
    subjects = {}
    for stem in stems:
        part = parts.get(stem)
        if part is None:
            names = list(kind.output_names)
            classifiers = frozenset({kind.classifier_output})
            feed = {kind.input_name: rows.numpy()}
            subjects[stem] = RangeSubject(
                reference_module, [kind.input_name], names, feed, classifiers
            )
            continue
        feed = {n: a.detach().numpy() for n, a in zip(part.input_names, part.args, strict=True)}
        subjects[stem] = RangeSubject(
            part.module, part.input_names, part.output_names, feed, part.classifier_outputs
        )
    return subjects


def check_declared_ranges(
    art: Artifact,
    subjects: dict[str, RangeSubject],
    gate_outputs: frozenset[str],
    threads: int | None,
    progress: Progress,
) -> dict[str, Any]:
    """Each graph run at every point of the ranges its manifest declares, against its
    reference (design.md §5): {stem: the check}, plus the failures naming dim and size."""
    checks: dict[str, Any] = {}
    failures: list[str] = []
    tolerance = Tolerance.for_precision(art.precision)
    for stem, subject in subjects.items():
        path = art.stage(stem)
        ranges, fixed = art.ranges(stem)
        if path is None or not ranges:
            continue
        feed = dict(subject.feed)
        for f in fixed:
            if f.input in feed:
                feed[f.input] = resize(feed[f.input], f.axis, f.size)
        with art.runner(path, threads=threads) as candidate:
            check = run_check(
                subject.module,
                subject.input_names,
                subject.output_names,
                candidate,
                ranges,
                feed,
                tolerance,
                classifier_outputs=subject.classifier_outputs,
                gate_outputs=gate_outputs & set(subject.output_names),
                title=f"{path.name} over its declared ranges",
                progress=progress,
            )
        checks[stem] = check.to_dict()
        failures += check.failures(path.name)
    return {"checks": checks, "failures": failures}


def with_ranges(parity: dict[str, Any], ranges: dict[str, Any]) -> dict[str, Any]:
    """The parity verdict with the range checks' failures added: a graph wrong at a declared
    size fails validation, whatever it does at the traced one."""
    failures = [*parity["failures"], *ranges["failures"]]
    return {**parity, "passed": not failures, "failures": failures, "ranges": ranges["checks"]}


def localization(
    art: Artifact,
    reference_module,
    feed: dict[str, np.ndarray],
    cand_feed: dict[str, np.ndarray],
) -> dict[str, Any]:
    """Layer-by-layer errors of the export's ONNX graph (the target says which graph, if any),
    or ``{"skipped": reason}`` where there is none to inspect."""
    graph = art.target.inspectable_onnx(art.model_path)
    if graph is None:
        return {
            "skipped": f"target '{art.target.name}' writes {art.model_path.name}, not an ONNX "
            "graph whose intermediate values onnxruntime can expose"
        }
    try:
        found = locate(reference_module, graph, feed, cand_feed, art.precision)
    except NotLocalizable as exc:
        return {"skipped": str(exc)}
    return found.to_dict()


def _accuracy(
    kind: Task,
    data: TaskData,
    loaded: LoadedModel,
    reference_module,
    reference: Predict,
    candidate: Predict,
    progress: Progress,
) -> dict[str, Any]:
    """The task's metric for the reference, the float model (when the reference is a
    quantized one) and the candidate, each given as a predict callable."""
    block: dict[str, Any] = {}
    with progress.phase(f"score reference on {data.source}"):
        block["reference"] = kind.score(reference, data, loaded.module)
    if reference_module is not loaded.module:
        with progress.phase("score float model"):
            block["float"] = kind.score_module(loaded.module, data)
    with progress.phase(f"score candidate on {data.source}"):
        block["candidate"] = kind.score(candidate, data, loaded.module)
    return block


def _host_checks(
    art: Artifact,
    feed: dict[str, np.ndarray],
    kind: Task,
    threads: int | None,
    progress: Progress,
) -> dict[str, Any]:
    """INT8: how the runtime's fused kernels agree with the graph run as written; and the
    target's warnings about running this file on this host."""
    checks: dict[str, Any] = {}
    if art.precision == "int8":
        with progress.phase("fused kernels vs dequantized graph"):
            check = art.target.kernel_check(art.model_path, feed, kind.classifier_output, threads)
        if check is not None:
            checks["kernel_agreement"] = check["top1_agreement"]
            checks["kernel_decisive_agreement"] = check.get("decisive_top1_agreement")
    checks["warnings"] = art.target.host_warnings(
        art.manifest, art.model_path.name, art.model_path.parent
    )
    return checks


STAGE1_THREADS = 1  # stage 1 is a few small convs: a second thread costs more than it gives


def two_stage_runner(
    art: Artifact, threads: int | None, stage1_threads: int | None = STAGE1_THREADS
) -> TwoStageRunner:
    """The deployed gated-compression pair: stage 2 runs only for samples past the gate.

    Stage 1 is the always-on part: its convs are too small to split across threads, so it runs
    on ``stage1_threads`` (one by default) and waking a thread pool for it costs more than it
    saves; stage 2, the full classifier, runs on ``threads``."""
    assert art.manifest is not None
    return TwoStageRunner(
        art.runner(art.stage("stage1"), threads=stage1_threads),
        art.runner(art.stage("stage2"), threads=threads),
        threshold=float(art.manifest.extra.get("threshold", 0.5)),
    )


def two_stage_metrics(
    art: Artifact, data: TaskData, loaded: LoadedModel, threads: int | None
) -> dict[str, Any]:
    """The deployed two-stage system on the test split: early stops, passes, accuracy."""
    assert data.labels is not None
    labels = data.labels.numpy()
    positive = labels == int(loaded.module.positive_class)
    with two_stage_runner(art, threads) as runner:
        out = runner.run({"images": as_dtype(data.inputs.numpy(), input_dtype(art, "images"))})
    passed = np.asarray(out["passed"], dtype=bool)
    predicted = np.where(passed, np.nan_to_num(out["logits"], nan=-np.inf).argmax(-1), -1)
    # A stopped sample is the system saying "not the wake word": right for every negative.
    correct = np.where(passed, predicted == labels, ~positive)
    return {
        "samples": int(len(labels)),
        "stop_rate_negatives": round(
            100.0 * float((~passed & ~positive).sum()) / max(int((~positive).sum()), 1), 4
        ),
        "pass_rate_positives": round(
            100.0 * float((passed & positive).sum()) / max(int(positive.sum()), 1), 4
        ),
        "system_accuracy": round(100.0 * float(correct.mean()), 4),
        "stage2_runs": int(passed.sum()),
    }
