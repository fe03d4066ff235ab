"""Stage orchestration: the only module that knows every stage (models, data, train, validate).

The CLI calls these functions and prints their plain-dict results.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgegate import data as datasets
from edgegate.atomic import staged_directory
from edgegate.errors import BadInput, NotYetImplemented
from edgegate.manifest import (
    MANIFEST_NAME,
    InputSpec,
    Manifest,
    read_manifest,
    sha256_file,
    write_manifest,
)
from edgegate.models import registry as zoo
from edgegate.train import TrainConfig, train_model
from edgegate.validate import accuracy

TASKS = ("image", "gc", "lm")


@dataclass(frozen=True)
class EvalInputs:
    """What a task's evaluator needs: images+labels, or token windows."""

    task: str
    inputs: torch.Tensor
    labels: torch.Tensor | None
    source: str


def model_table() -> list[dict[str, Any]]:
    """One row per zoo model: size and cost at the default input, and shipped variants."""
    shipped = _shipped_by_model()
    rows = []
    for info in zoo.list_models():
        module = zoo.build_model(info.name).eval()
        example = zoo.example_inputs(info)
        rows.append(
            {
                "name": info.name,
                "task": info.task,
                "params": zoo.count_params(module),
                "macs": zoo.count_macs(module, example),
                "default_input": list(info.default_input),
                "options": {k: v for k, v in info.options.items()},
                "shipped_weights": shipped.get(info.name, []),
                "description": info.description,
            }
        )
    return rows


def _shipped_by_model() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in sorted(zoo.WEIGHTS_DIR.glob("*.pt")):
        spec = zoo.load_checkpoint(path)["spec"]
        found.setdefault(zoo.parse_spec(spec)[0], []).append(spec)
    return found


def _task(loaded: zoo.LoadedModel, task: str | None) -> str:
    if loaded.info is not None:
        return loaded.info.task
    if task is not None and task not in TASKS:
        raise BadInput(f"unknown task '{task}': expected one of {', '.join(TASKS)}")
    if task is None:
        raise BadInput(
            f"model '{loaded.spec}' is not from the zoo: pass --task ({', '.join(TASKS)})"
        )
    return task


def _image_geometry(loaded: zoo.LoadedModel, input_size: int | None) -> tuple[int, int]:
    """(channels, side) from the spec's own options, e.g. `mobilenet-v3-se:in_channels=1`."""
    if loaded.info is None:
        return 3, input_size or 32
    channels, _, size = zoo.example_inputs(loaded.spec)[0].shape[1:]
    return int(channels), input_size or int(size)


def _seq_len(loaded: zoo.LoadedModel, seq_len: int | None) -> int:
    if seq_len is not None:
        return seq_len
    return loaded.info.default_input[0] if loaded.info is not None else 128


def load_task_data(
    loaded: zoo.LoadedModel,
    task: str,
    source: str | None,
    split: str,
    *,
    input_size: int | None = None,
    seq_len: int | None = None,
) -> EvalInputs:
    if task == "lm":
        tokens = datasets.resolve_text_data(source, split)
        length = _seq_len(loaded, seq_len)
        windows = datasets.text_windows(tokens, length)
        if len(windows) == 0:
            raise BadInput(
                f"text data '{source or 'stdlib'}' is shorter than one window "
                f"of {length + 1} tokens"
            )
        return EvalInputs(task, windows, None, source or "stdlib")
    channels, size = _image_geometry(loaded, input_size)
    images = datasets.resolve_image_data(source, split, size=size, channels=channels)
    if images.labels is None:
        raise BadInput(f"image data '{images.name}' has no labels: accuracy needs labelled data")
    return EvalInputs(task, images.images, images.labels, images.name)


def torch_predict(module: nn.Module) -> Callable[[np.ndarray], list[np.ndarray]]:
    """Wrap a module as the backend-neutral predict callable the evaluators take."""

    @torch.no_grad()
    def predict(batch: np.ndarray) -> list[np.ndarray]:
        out = module(torch.from_numpy(np.ascontiguousarray(batch)))
        outs = out if isinstance(out, tuple | list) else (out,)
        return [o.detach().float().numpy() for o in outs]

    return predict


def score(module: nn.Module, data: EvalInputs) -> dict[str, Any]:
    """Task metrics of a torch module on data (top-1, gate metrics, or perplexity)."""
    metrics = score_predict(torch_predict(module.eval()), data, module)
    if data.task == "gc":
        metrics["compression_ratio"] = round(float(module.gc.compression_ratio()), 4)
    return metrics


def score_predict(predict, data: EvalInputs, module: nn.Module) -> dict[str, Any]:
    """Task metrics of any backend's predict callable; ``module`` supplies GC settings."""
    if data.task == "lm":
        return accuracy.as_dict(accuracy.language_model_metrics(predict, data.inputs.numpy()))
    assert data.labels is not None
    images, labels = data.inputs.numpy(), data.labels.numpy()
    if data.task == "gc":
        return accuracy.as_dict(
            accuracy.gate_metrics(
                predict,
                images,
                labels,
                positive_class=int(module.positive_class),
                threshold=float(module.threshold),
            )
        )
    return accuracy.as_dict(accuracy.classifier_metrics(predict, images, labels))


def train(
    model: str,
    output: Path,
    config: TrainConfig,
    *,
    data: str | None = None,
    input_size: int | None = None,
    seq_len: int | None = None,
    checkpoint: Path | None = None,
    trust_code: bool = False,
    task: str | None = None,
    command: str = "",
    on_step: Callable[[int, int, float], None] | None = None,
) -> dict[str, Any]:
    """Train from scratch (or from ``checkpoint``), score on the test split, save atomically."""
    output = Path(output)
    if output.exists() and output.is_dir():
        raise BadInput(f"output '{output}' is a directory: give a checkpoint file path")
    if not output.parent.exists():
        raise BadInput(f"output folder '{output.parent}' does not exist")
    loaded = zoo.load_model(model, checkpoint, trust_code=trust_code, pretrained=False)
    kind = _task(loaded, task)
    train_data = load_task_data(loaded, kind, data, "train", input_size=input_size, seq_len=seq_len)
    test_data = load_task_data(loaded, kind, data, "test", input_size=input_size, seq_len=seq_len)
    result = train_model(
        loaded.module, kind, train_data.inputs, train_data.labels, config, on_step=on_step
    )
    metrics = score(result.module, test_data)
    extra = {
        "command": command,
        "data": train_data.source,
        "epochs": config.epochs,
        "steps": result.steps,
        "final_loss": round(result.epoch_losses[-1], 5) if result.epoch_losses else None,
        "torch": torch.__version__,
    }
    zoo.save_checkpoint(output, result.module, loaded.spec, metrics=metrics, extra=extra)
    return {"checkpoint": os.fspath(output), "spec": loaded.spec, "metrics": metrics, **extra}


def evaluate(
    model: str,
    *,
    checkpoint: Path | None = None,
    data: str | None = None,
    split: str = "test",
    input_size: int | None = None,
    seq_len: int | None = None,
    trust_code: bool = False,
    task: str | None = None,
) -> dict[str, Any]:
    """Score a model (shipped weights unless a checkpoint is given) on a data split."""
    loaded = zoo.load_model(model, checkpoint, trust_code=trust_code)
    if checkpoint is None and loaded.info is not None and zoo.shipped_weights(loaded.spec) is None:
        raise BadInput(
            f"no shipped weights for '{loaded.spec}': pass --checkpoint (train one with "
            f"`edgegate train {loaded.spec} -o ckpt.pt`)"
        )
    kind = _task(loaded, task)
    eval_data = load_task_data(loaded, kind, data, split, input_size=input_size, seq_len=seq_len)
    return {
        "spec": loaded.spec,
        "task": kind,
        "data": eval_data.source,
        "split": split,
        "metrics": score(loaded.module, eval_data),
        "recorded_metrics": loaded.metrics,
    }


# --------------------------------------------------------------------------- export

TARGETS = {"onnx": None, "onnxruntime": "onnxruntime"}
INT8_STATE = "model.int8.pt"  # written by edgegate.int8
LATER_TARGETS = ("tensorrt", "coreml")
INPUT_NAME = {"image": "images", "gc": "images", "lm": "tokens"}
OUTPUT_NAMES = {"image": ["logits"], "gc": ["logits", "gate_prob"], "lm": ["logits"]}
MODEL_FILE, STAGE1_FILE, STAGE2_FILE = "model.onnx", "stage1.onnx", "stage2.onnx"


def _onnx_input_specs(path: Path) -> list[InputSpec]:
    import onnx

    model = onnx.load(os.fspath(path), load_external_data=False)
    specs = []
    for value in model.graph.input:
        tensor = value.type.tensor_type
        shape: list[int | str] = [
            d.dim_param or (d.dim_value if d.HasField("dim_value") else "?")
            for d in tensor.shape.dim
        ]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
        specs.append(InputSpec(value.name, shape, dtype))
    return specs


def export(
    model: str,
    output_dir: Path,
    *,
    target: str = "onnx",
    checkpoint: Path | None = None,
    input_size: int | None = None,
    seq_len: int | None = None,
    trust_code: bool = False,
    task: str | None = None,
) -> dict[str, Any]:
    """Export a model (and a GC model's two stages) into ``output_dir`` with a manifest."""
    if target in LATER_TARGETS:
        raise NotYetImplemented(f"--target {target} is not available yet: use onnx or onnxruntime")
    if target not in TARGETS:
        raise BadInput(f"unknown target '{target}': expected one of {', '.join(TARGETS)}")
    from edgegate.exporters.onnx import custom_ops_used, export_onnx

    loaded = zoo.load_model(model, checkpoint, trust_code=trust_code)
    kind = _task(loaded, task)
    module = loaded.module.eval()
    example = _example(loaded, kind, batch=1, input_size=input_size, seq_len=seq_len)
    weights = _weights_source(loaded, checkpoint)
    metadata = {"model": loaded.spec, "task": kind, "target": target, "weights": weights}
    jobs = [(MODEL_FILE, module, example, [INPUT_NAME[kind]], OUTPUT_NAMES[kind])]
    if kind == "gc":
        with torch.no_grad():
            features = module.stage1(*example)[1]
        jobs += [
            (STAGE1_FILE, module.stage1, example, ["images"], ["gate_prob", "features"]),
            (STAGE2_FILE, module.stage2, (features,), ["features"], ["logits"]),
        ]
    with staged_directory(output_dir) as stage:
        files, ops = {}, set()
        for name, part, args, inputs, outputs in jobs:
            input_specs = [
                {"name": n, "example_shape": list(a.shape), "dtype": str(a.dtype).split(".")[-1]}
                for n, a in zip(inputs, args, strict=True)
            ]
            path = export_onnx(
                part,
                args,
                stage / name,
                lower=TARGETS[target],
                input_names=inputs,
                output_names=outputs,
                metadata={**metadata, "part": name, "inputs": json.dumps(input_specs)},
            )
            files[name] = sha256_file(path)
            ops.update(custom_ops_used(path))
        manifest = Manifest(
            model=loaded.spec,
            target=target,
            precision="fp32",
            inputs=_onnx_input_specs(stage / MODEL_FILE),
            outputs=OUTPUT_NAMES[kind],
            task=kind,
            files=files,
            custom_ops=sorted(ops),
            extra={
                "example_shapes": {INPUT_NAME[kind]: list(example[0].shape)},
                "threshold": float(getattr(module, "threshold", 0.5)),
                "positive_class": int(getattr(module, "positive_class", -1)),
                "weights": weights,
            },
        )
        write_manifest(stage, manifest)
    return {
        "output_dir": os.fspath(output_dir),
        "model": loaded.spec,
        "target": target,
        "files": sorted([*files, MANIFEST_NAME]),
        "custom_ops": manifest.custom_ops,
        "weights": weights,
        "inputs": [asdict(spec) for spec in manifest.inputs],
    }


def _weights_source(loaded: zoo.LoadedModel, checkpoint: Path | None) -> str:
    """Say where the weights came from, so a randomly initialised export never goes unnoticed."""
    if checkpoint is not None:
        return f"checkpoint {checkpoint}"
    if loaded.info is None:
        return "user model"
    return "shipped" if zoo.shipped_weights(loaded.spec) else "random init (no shipped weights)"


def _example(
    loaded: zoo.LoadedModel,
    task: str,
    *,
    batch: int,
    input_size: int | None,
    seq_len: int | None,
) -> tuple[torch.Tensor, ...]:
    if loaded.info is not None:
        return zoo.example_inputs(loaded.spec, batch=batch, input_size=input_size, seq_len=seq_len)
    if task == "lm":
        return (torch.randint(0, 256, (batch, seq_len or 128)),)
    return (torch.randn(batch, 3, input_size or 32, input_size or 32),)


# --------------------------------------------------------------------------- validate


@dataclass(frozen=True)
class Artifact:
    """An export folder (with manifest) or a bare .onnx file."""

    model_path: Path
    manifest: Manifest | None
    directory: Path | None

    def part(self, name: str) -> Path | None:
        if self.directory is None or self.manifest is None or name not in self.manifest.files:
            return None
        return self.directory / name


def open_artifact(artifact: Path) -> Artifact:
    path = Path(artifact)
    if path.is_dir():
        manifest = read_manifest(path)
        model_file = manifest.extra.get("model_file", MODEL_FILE)
        if model_file not in manifest.files:
            raise BadInput(f"'{path}' holds no {model_file} (its manifest lists {manifest.files})")
        return Artifact(path / model_file, manifest, path)
    if path.suffix != ".onnx":
        raise BadInput(f"'{path}' is neither an export folder nor a .onnx file")
    if not path.is_file():
        raise BadInput(f"'{path}' does not exist")
    sibling = path.parent / MANIFEST_NAME
    if sibling.is_file():  # a file inside an export folder: use the folder's record
        manifest = read_manifest(path.parent)
        if path.name in manifest.files:
            return Artifact(path, manifest, path.parent)
    return Artifact(path, None, None)


def _artifact_geometry(art: Artifact, task: str) -> dict[str, int | None]:
    """The export example's image side / sequence length, so validation feeds the same."""
    if art.manifest is None:
        return {"input_size": None, "seq_len": None}
    shape = next(iter(art.manifest.extra.get("example_shapes", {}).values()), None)
    if not shape:
        return {"input_size": None, "seq_len": None}
    return (
        {"input_size": None, "seq_len": int(shape[-1])}
        if task == "lm"
        else {
            "input_size": int(shape[-1]),
            "seq_len": None,
        }
    )


def _model_inputs(data: EvalInputs) -> np.ndarray:
    return (data.inputs[:, :-1] if data.task == "lm" else data.inputs).numpy()


def _runner_predict(runner, input_name: str):
    def predict(batch: np.ndarray) -> list[np.ndarray]:
        return list(runner.run({input_name: np.ascontiguousarray(batch)}).values())

    return predict


def _fuse_qdq(art: Artifact) -> bool:
    """ONNX Runtime fuses Q/DQ into its integer kernels only for its own profiles; graphs made
    for other runtimes (TensorRT, Core ML) are checked as written: dequantize, then float."""
    quant = art.manifest.quant if art.manifest is not None else None
    return not quant or quant["profile"].partition(":")[0] == "onnxruntime"


def host_warnings(art: Artifact) -> list[str]:
    """One line per way this host's kernels may not compute what the artifact was made for."""
    from edgegate.hostcpu import X86_AVX2, host_isa

    quant = art.manifest.quant if art.manifest is not None else None
    if not quant or not _fuse_qdq(art) or host_isa() != X86_AVX2:
        return []
    from edgegate.quant.profiles import get_profile

    if get_profile(quant["profile"]).weight_bits <= 7:
        return []
    return [
        f"{art.model_path.name} has full-range int8 weights (profile {quant['profile']}), which "
        "this AVX2 host's u8s8 kernels saturate: quantize with --profile onnxruntime:x86-avx2 "
        "to run it here"
    ]


def kernel_agreement(
    path: Path, feed: dict[str, np.ndarray], output: str, threads: int | None
) -> float:
    """Top-1 agreement (percent) of ORT's fused integer kernels with the same Q/DQ graph run as
    written (dequantize, then float): 100 unless the kernels round or saturate otherwise."""
    from edgegate.runtime import OnnxRuntimeRunner
    from edgegate.validate.parity import top1_agreement

    with (
        OnnxRuntimeRunner(path, threads=threads, fuse_qdq=True) as fused,
        OnnxRuntimeRunner(path, threads=threads, fuse_qdq=False) as emulated,
    ):
        return round(top1_agreement(emulated.run(feed)[output], fused.run(feed)[output]), 4)


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
) -> dict[str, Any]:
    """Parity (and accuracy) of an exported artifact against its PyTorch reference."""
    from edgegate.runtime import OnnxRuntimeRunner, TorchRunner
    from edgegate.validate.parity import Tolerance, compare_outputs

    art = open_artifact(artifact)
    spec = reference or (art.manifest.model if art.manifest else None)
    if spec is None:
        raise BadInput(f"'{artifact}' has no manifest: pass --reference MODEL")
    loaded = zoo.load_model(spec, checkpoint, trust_code=trust_code)
    kind = _task(loaded, task or (art.manifest.task if art.manifest else None))
    eval_data = load_task_data(loaded, kind, data, "test", **_artifact_geometry(art, kind))
    inputs = _model_inputs(eval_data)
    outputs = OUTPUT_NAMES[kind]
    input_name = INPUT_NAME[kind]
    limit = parity_samples if kind != "lm" else max(1, parity_samples // 16)
    feed = {input_name: np.ascontiguousarray(inputs[:limit])}
    reference_module = loaded.module
    int8_state = art.part(INT8_STATE)
    if art.manifest is not None and art.manifest.precision == "int8" and int8_state is not None:
        from edgegate import int8  # brevitas loads only when an INT8 export is validated

        # an INT8 export is judged against its brevitas fake-quant model; float gives the drop
        reference_module = int8.load_fake_quant(int8_state, loaded.module)
    with (
        TorchRunner(reference_module, [input_name], outputs) as ref,
        OnnxRuntimeRunner(art.model_path, threads=threads, fuse_qdq=_fuse_qdq(art)) as cand,
    ):
        ref_out, cand_out = ref.run(feed), cand.run(feed)
        report = compare_outputs(
            ref_out,
            cand_out,
            Tolerance.for_precision(art.manifest.precision if art.manifest else "fp32"),
            gate_outputs={"gate_prob"} if kind == "gc" else set(),
            classifier_outputs={"logits"},
        )
        accuracy_block = None
        if with_accuracy:
            accuracy_block = {
                "reference": score_predict(
                    _runner_predict(ref, input_name), eval_data, loaded.module
                ),
                **(
                    {"float": score(loaded.module, eval_data)}
                    if reference_module is not loaded.module
                    else {}
                ),
                "candidate": score_predict(
                    _runner_predict(cand, input_name), eval_data, loaded.module
                ),
            }
    result = {
        "artifact": os.fspath(artifact),
        "reference": loaded.spec,
        "data": eval_data.source,
        "parity_samples": int(len(feed[input_name])),
        **report.to_dict(),
        "accuracy": accuracy_block,
    }
    if kind == "gc" and art.part(STAGE1_FILE) and art.part(STAGE2_FILE):
        result["two_stage"] = _two_stage_metrics(art, eval_data, loaded, threads)
    if reference_module is not loaded.module and _fuse_qdq(art):
        result["kernel_agreement"] = kernel_agreement(art.model_path, feed, "logits", threads)
    result["warnings"] = host_warnings(art)
    return result


def _two_stage_runner(art: Artifact, threads: int | None):
    from edgegate.runtime import OnnxRuntimeRunner, TwoStageRunner

    assert art.manifest is not None
    return TwoStageRunner(
        OnnxRuntimeRunner(art.part(STAGE1_FILE), threads=threads),
        OnnxRuntimeRunner(art.part(STAGE2_FILE), threads=threads),
        threshold=float(art.manifest.extra.get("threshold", 0.5)),
    )


def _two_stage_metrics(
    art: Artifact, data: EvalInputs, loaded: zoo.LoadedModel, threads: int | None
) -> dict[str, Any]:
    """The deployed two-stage system on the test split: early stops, passes, accuracy."""
    assert data.labels is not None
    labels = data.labels.numpy()
    positive = labels == int(loaded.module.positive_class)
    with _two_stage_runner(art, threads) as runner:
        out = runner.run({"images": data.inputs.numpy()})
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


# --------------------------------------------------------------------------- bench


def _bench_feed(art: Artifact, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs at the export example's shape, with the batch dim set to ``batch``."""
    rng = np.random.default_rng(seed)
    specs = art.manifest.inputs if art.manifest else _onnx_input_specs(art.model_path)
    examples = art.manifest.extra.get("example_shapes", {}) if art.manifest else {}
    feed = {}
    for spec in specs:
        shape = list(examples.get(spec.name, spec.shape))
        shape[0] = batch
        if any(not isinstance(d, int) for d in shape):
            raise BadInput(
                f"input '{spec.name}' of '{art.model_path}' has dynamic dims {spec.shape} besides "
                "the batch: bench an export folder (its manifest records the example shape)"
            )
        if spec.dtype.startswith("int"):
            feed[spec.name] = rng.integers(0, 256, size=shape).astype(spec.dtype)
        else:
            feed[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
    return feed


def bench(
    artifact: Path,
    *,
    runs: int = 50,
    warmup: int = 5,
    threads: int | None = 2,
    batch: int = 1,
    positive_rate: float = 0.10,
    stream_samples: int = 200,
    plot: Path | None = None,
) -> dict[str, Any]:
    """Latency of the exported model; for GC exports also the two-stage stream latency."""
    from edgegate.runtime import OnnxRuntimeRunner
    from edgegate.validate import bench as benchmark

    if not 0.0 <= positive_rate <= 1.0:
        raise BadInput(f"--positive-rate {positive_rate} must lie in [0, 1]")
    art = open_artifact(artifact)
    feed = _bench_feed(art, batch)
    with OnnxRuntimeRunner(art.model_path, threads=threads) as runner:
        full = benchmark.bench(runner, feed, runs=runs, warmup=warmup)
        result: dict[str, Any] = {
            "artifact": os.fspath(artifact),
            **benchmark.as_dict(full),
            "warnings": host_warnings(art),
        }
        if art.part(STAGE1_FILE) and art.part(STAGE2_FILE):
            images, positive = _stream_images(art)
            with _two_stage_runner(art, threads) as two_stage:
                stream = benchmark.bench_two_stage(
                    two_stage,
                    images,
                    positive,
                    positive_rate=positive_rate,
                    n=stream_samples,
                    full_runner=runner,
                )
            result["two_stage"] = benchmark.as_dict(stream)
    if plot is not None:
        benchmark.plot_latencies(full, plot)
        result["plot"] = os.fspath(plot)
    return result


def _stream_images(art: Artifact) -> tuple[np.ndarray, np.ndarray]:
    """Digits test images at the export's size, and which of them are the positive class."""
    assert art.manifest is not None
    shape = art.manifest.extra["example_shapes"]["images"]
    images = datasets.digits("test", size=int(shape[-1]), channels=int(shape[1]))
    assert images.labels is not None
    positive = images.labels.numpy() == int(art.manifest.extra["positive_class"])
    return images.images.numpy(), positive


# --------------------------------------------------------------------------- deploy

DEFAULT_DEPLOY_MODEL = "gc-mobilenet"
INT8_DIR = "int8"


def deploy(
    model: str = DEFAULT_DEPLOY_MODEL,
    output_dir: Path = Path("edgegate-out"),
    *,
    target: str = "onnxruntime",
    checkpoint: Path | None = None,
    data: str | None = None,
    runs: int = 50,
    threads: int | None = 2,
    trust_code: bool = False,
    int8_profile: str | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Export, validate (parity + accuracy), bench; write report.json and report.md.

    With ``int8_profile`` it also quantizes (PTQ, minmax) into ``output_dir/int8`` and
    validates and benches that export too.
    """
    from edgegate.validate import report as reports

    def stage(name: str) -> None:
        if on_stage is not None:
            on_stage(name)

    stage("export")
    exported = export(
        model, output_dir, target=target, checkpoint=checkpoint, trust_code=trust_code
    )
    stage("validate")
    validated = validate(output_dir, checkpoint=checkpoint, data=data, trust_code=trust_code)
    stage("bench")
    timed = bench(output_dir, runs=runs, threads=threads)
    summary = {
        "model": exported["model"],
        "target": target,
        "passed": bool(validated["passed"]),
        "export": exported,
        "validate": validated,
        "bench": timed,
    }
    if int8_profile is not None:
        from edgegate import int8

        int8_dir = Path(output_dir) / INT8_DIR
        stage("quantize")
        quantized = int8.quantize(
            model, int8_dir, profile=int8_profile, checkpoint=checkpoint, trust_code=trust_code
        )
        stage("validate int8")
        validated8 = validate(int8_dir, checkpoint=checkpoint, data=data, trust_code=trust_code)
        stage("bench int8")
        timed8 = bench(int8_dir, runs=runs, threads=threads)
        summary["passed"] = summary["passed"] and bool(validated8["passed"])
        summary["int8"] = {"quantize": quantized, "validate": validated8, "bench": timed8}
    reports.write_json(Path(output_dir) / "report.json", summary)
    reports.write_markdown(
        Path(output_dir) / "report.md",
        f"edgegate deploy: {exported['model']}",
        summary_sections(summary),
    )
    return summary


def summary_sections(summary: dict[str, Any]) -> list[tuple[str, list[tuple[str, str]]]]:
    """Rows of the human summary (the Markdown report and the CLI table share them)."""
    head = [
        ("model", summary["model"]),
        ("weights", summary["export"]["weights"]),
        ("target", summary["target"]),
    ]
    sections = [
        ("Summary", head + validation_rows(summary["validate"]) + bench_rows(summary["bench"]))
    ]
    if "int8" in summary:
        block = summary["int8"]
        quant = block["quantize"]["quant"]
        rows = [("profile", quant["profile"]), ("method", quant["method"])]
        rows += validation_rows(block["validate"]) + bench_rows(block["bench"])
        sections.append(("INT8", rows))
    return sections


def validation_rows(val: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [("parity", "PASS" if val["passed"] else "FAIL")]
    rows += [("failure", failure) for failure in val.get("failures", [])]
    for name, m in val["outputs"].items():
        rows.append((f"{name}: max abs / SNR", f"{m['max_abs']:.2e} / {m['snr_db']} dB"))
    if val.get("top1_agreement") is not None:
        rows.append(("top-1 agreement", f"{val['top1_agreement']:.2f} %"))
    if val.get("decisive_top1_agreement") is not None:
        rows.append(("  where not a near-tie", f"{val['decisive_top1_agreement']:.2f} %"))
    if val.get("kernel_agreement") is not None:
        rows.append(("fused kernels vs dequantized", f"{val['kernel_agreement']:.2f} % top-1"))
    if val.get("accuracy"):
        ref, cand = val["accuracy"]["reference"], val["accuracy"]["candidate"]
        key = "perplexity" if "perplexity" in ref else "top1"
        rows.append((f"{key}: torch / onnx", f"{ref[key]:.4g} / {cand[key]:.4g}"))
    if "two_stage" in val:
        ts = val["two_stage"]
        rows += [
            ("two-stage: stops negatives", f"{ts['stop_rate_negatives']:.1f} %"),
            ("two-stage: passes positives", f"{ts['pass_rate_positives']:.1f} %"),
            ("two-stage: accuracy", f"{ts['system_accuracy']:.2f} %"),
        ]
    return rows


def bench_rows(timed: dict[str, Any]) -> list[tuple[str, str]]:
    lat = timed["latency_ms"]
    rows = [
        ("latency p50 / p90 / p99", f"{lat['p50']:.3f} / {lat['p90']:.3f} / {lat['p99']:.3f} ms"),
        ("throughput", f"{timed['throughput_per_s']:.1f} /s"),
        ("peak RSS", f"{timed['peak_rss_mb']:.0f} MB"),
    ]
    if "two_stage" in timed:
        ts = timed["two_stage"]
        rows.append(
            (
                f"stream latency/sample ({100 * ts['positive_rate']:.0f} % positive)",
                f"{ts['mean_latency_ms']:.3f} ms = {ts['ratio_to_full']:.2f}x full model",
            )
        )
    return rows
