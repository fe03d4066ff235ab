"""The export stage: a model (and a GC model's two stages) into a target's files plus manifest."""

from __future__ import annotations

import copy
import dataclasses
import os
from pathlib import Path
from typing import Any

from edgegate.atomic import staged_directory
from edgegate.errors import BadInput
from edgegate.manifest import MANIFEST_NAME, Manifest, read_manifest, sha256_file, write_manifest
from edgegate.models import LoadedModel, load_model
from edgegate.outputs import check_output_dir
from edgegate.pipeline.golden import export_golden, golden_cases
from edgegate.pipeline.ranges import CheckedExport, RangePolicy, declare, export_checked
from edgegate.pipeline.recurrences import prepare_recurrences
from edgegate.pipeline.streaming import Streaming
from edgegate.pipeline.tasks import Task, make_part, resolve_task
from edgegate.pipeline.weights import record_weights, store_weights
from edgegate.progress import SILENT, Progress
from edgegate.targets import ExportedFile, ExportPart, Target, get_target

PRECISIONS = ("fp32", "fp16")


def check_precision(target: Target, precision: str) -> None:
    if precision not in PRECISIONS:
        raise BadInput(f"unknown precision '{precision}': expected one of {', '.join(PRECISIONS)}")
    if precision not in target.precisions:
        raise BadInput(
            f"target '{target.name}' exports {', '.join(target.precisions)}, not {precision}"
        )


def in_half(part: ExportPart) -> ExportPart:
    """The part in fp16: a half copy of its module, float inputs in half (tokens stay ints)."""
    args = tuple(a.half() if a.is_floating_point() else a for a in part.args)
    module = copy.deepcopy(part.module).half().eval()
    return dataclasses.replace(part, module=module, args=args, precision="fp16")


def package_and_manifest(
    target: Target,
    stage: Path,
    parts: list[ExportPart],
    written: list[ExportedFile],
    manifest: Manifest,
) -> None:
    """Let the target add its files around the model files (a build kit), then record and
    hash them all in the manifest, which is written last."""
    extras = target.package(stage, manifest.model, manifest.precision, parts, written)
    for relative in extras["files"]:
        manifest.files[relative] = sha256_file(stage / relative)
    manifest.extra.update(extras["record"])
    write_manifest(stage, manifest)


def build_engines(target: Target, output_dir: Path, progress: Progress) -> list[str]:
    """``--build``: the target's engines, in this process, recorded in the manifest."""
    output_dir = Path(output_dir)
    manifest = read_manifest(output_dir)
    with progress.phase("build engines"):
        built = target.build(output_dir, manifest)
    for name in built:
        manifest.files[name] = sha256_file(output_dir / name)
    write_manifest(output_dir, manifest)
    return built


def _size_hint(
    loaded,
    task: str,
    example: tuple,
    input_size: int | None,
    seq_len: int | None,
    target: Target,
) -> list[str]:
    """A user model exported at edgegate's default size, which may not be the deployment's:
    the declared ranges (and a kit's shape profile) are built around the traced size."""
    if loaded.info is not None or input_size is not None or seq_len is not None:
        return []
    shape = "x".join(str(int(d)) for d in example[0].shape[1:])
    option = "--seq-len" if task == "lm" else "--input-size"
    bounded = target.bounded_by_export or (task == "lm" and target.sequences_bounded_by_export)
    reach = (
        f" stop at the traced size: {target.name} plans its files for it"
        if bounded
        else ", a TensorRT kit's shape profile among them, go up to twice the traced size"
    )
    return [
        f"traced at {shape}, edgegate's default for a model outside the zoo: pass {option} "
        f"with your deployment size (the declared ranges{reach})"
    ]


def trace_batch(loaded: LoadedModel, target: Target) -> int:
    """The traced example's batch: 2 for models edgegate did not write, so that their code's
    ``x.size(0)`` traces as a symbol (torch specialises a size-1 dim to the constant 1, and a
    reshape by it then breaks every other batch). The zoo traces at 1, as it always has."""
    bound = getattr(loaded.module, "max_batch", None)
    if loaded.info is not None or (bound is not None and bound < 2) or target.max_batch < 2:
        return 1
    return 2


def streaming_parts(
    stream: Streaming,
    kind: Task,
    example: tuple,
    metadata: dict[str, str],
) -> list[ExportPart]:
    """The one graph a streaming export writes: the step ``(tokens, *states) -> (logits,
    *new_states)``, traced from zero states (or the LM's example states)."""
    args = stream.example(example[0])
    dims = stream.dynamic_dims(kind.dynamic_dims())
    return [make_part("model", stream.module(), args, *stream.names(), dims, metadata)]


def export(
    model: str,
    output_dir: Path,
    *,
    target: str = "onnx",
    precision: str | None = None,
    checkpoint: Path | None = None,
    input_size: int | None = None,
    seq_len: int | None = None,
    trust_code: bool = False,
    task: str | None = None,
    build: bool = False,
    streaming: bool = False,
    progress: Progress = SILENT,
) -> dict[str, Any]:
    """Export ``model`` for ``target`` into ``output_dir`` with a manifest (atomically); with
    ``build``, also build the target's engine here (TensorRT).

    ``streaming`` (scan LMs; hf: LMs, their cache as states): the file is the streaming step,
    every layer's state an input and an output, so a decoder feeds each call's new states to
    the next call (what `quantize --streaming` ships in INT8)."""
    chosen = get_target(target)
    precision = precision or chosen.precisions[0]
    check_precision(chosen, precision)
    check_output_dir(output_dir)
    chosen.check_available()
    if build:
        chosen.check_build()  # exit 3 before any work when this machine cannot build
    loaded = load_model(model, checkpoint, trust_code=trust_code)
    kind = resolve_task(loaded, task)
    stream = Streaming(loaded) if streaming else None  # BadInput for a model without state
    module = loaded.module.eval()
    example = kind.example(
        loaded, batch=trace_batch(loaded, chosen), input_size=input_size, seq_len=seq_len
    )
    with progress.phase("recognise recurrences"):
        probe = kind.example(loaded, batch=2, input_size=input_size, seq_len=seq_len)
        recurrences = prepare_recurrences(module, probe).to_dict()
    weights = record_weights(loaded, checkpoint)
    metadata = {
        "model": loaded.spec,
        "task": kind.name,
        "target": chosen.name,
        "precision": precision,
        "weights": weights.label,
    }
    if stream is not None:
        metadata["streaming"] = "true"

    def parts_of(inputs: tuple) -> list[ExportPart]:
        if stream is not None:  # built after the swap: the step shares the LM's swapped blocks
            return streaming_parts(stream, kind, inputs, metadata)
        return kind.export_parts(module, inputs, metadata)

    policy = RangePolicy.of(loaded)
    declared = [declare(part, chosen, policy) for part in parts_of(example)]
    # the inputs every range is checked on: as many distinct rows as the largest batch
    base = kind.example(loaded, batch=chosen.max_batch, input_size=input_size, seq_len=seq_len)
    bases = [part.args for part in parts_of(base)]
    parts = [part for part, _ in declared]
    if precision == "fp16":
        parts = [
            dataclasses.replace(part, precision="fp16") if chosen.converts_precision
            else in_half(part)
            for part in parts
        ]  # fmt: skip
    for part in parts:
        chosen.check_part(part)
    with staged_directory(output_dir) as stage:
        files: dict[str, str] = {}
        written: list[ExportedFile] = []
        checked: list[CheckedExport] = []
        for part, (float_part, fixed), args in zip(parts, declared, bases, strict=True):
            with progress.phase(f"export {chosen.file_name(part.stem)}"):
                result = export_checked(
                    chosen,
                    part,
                    stage,
                    float_part.module,
                    args,
                    fixed,
                    precision=precision,
                    gate_outputs=kind.gate_outputs,
                    progress=progress,
                )
            exported = result.file
            checked.append(result)
            written.append(exported)
            files[exported.path.name] = sha256_file(exported.path)
        stored = store_weights(loaded, weights, stage)
        if stored is not None:
            files[stored] = sha256_file(stage / stored)
        state_record = {}
        if stream is not None:
            state_record = {
                "streaming": {
                    "state_inputs": stream.state_inputs,
                    "state_outputs": stream.state_outputs,
                    "state_quantized": False,
                }
            }
        manifest = Manifest(
            model=loaded.spec,
            target=chosen.name,
            precision=precision,
            inputs=written[0].inputs,
            outputs=stream.names()[1] if stream is not None else list(kind.output_names),
            task=kind.name,
            files=files,
            custom_ops=sorted({op for w in written for op in w.custom_ops}),
            ranges={c.part.stem: c.record() for c in checked},
            extra={
                "model_file": written[0].path.name,
                "example_shapes": {kind.input_name: list(example[0].shape)},
                **kind.settings(module),
                **({"recurrences": recurrences} if any(recurrences.values()) else {}),
                **state_record,
                "weights": weights.label,
                "weights_source": weights.to_dict(),
            },
        )
        shipped = [c.part for c in checked]
        if chosen.golden_samples and stream is not None:
            with progress.phase("golden cases from the task's test data"):
                test = kind.load(loaded, None, "test", input_size=input_size, seq_len=seq_len)
                shipped = golden_cases(
                    kind,
                    kind.model_inputs(test),
                    shipped,
                    lambda rows: {"model": stream.example(rows)},
                )
        elif chosen.golden_samples:
            with progress.phase("golden cases from the task's test data"):
                shipped = export_golden(
                    kind, loaded, module, metadata, shipped, input_size=input_size,
                    seq_len=seq_len,
                )  # fmt: skip
        with progress.phase(f"package for {chosen.name}"):
            package_and_manifest(chosen, stage, shipped, written, manifest)
    built = build_engines(chosen, output_dir, progress) if build else []
    listed = read_manifest(output_dir).files
    return {
        "output_dir": os.fspath(output_dir),
        "model": loaded.spec,
        "target": chosen.name,
        "precision": precision,
        "files": sorted([*listed, MANIFEST_NAME]),
        "custom_ops": manifest.custom_ops,
        "weights": weights.label,
        "inputs": [dataclasses.asdict(spec) for spec in manifest.inputs],
        "ranges": manifest.ranges,
        "engines": built,
        "recurrences": recurrences,
        **state_record,
        "warnings": [
            *_size_hint(loaded, kind.name, example, input_size, seq_len, chosen),
            *(line for c in checked for line in c.warnings()),
        ],
    }
