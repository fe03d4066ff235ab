"""Stage orchestration: the only module that knows every stage (models, data, train, validate).

The CLI calls these functions and prints their plain-dict results.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgegate import data as datasets
from edgegate.errors import BadInput
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
    """Task metrics of a module on data (top-1, gate metrics, or perplexity)."""
    predict = torch_predict(module.eval())
    if data.task == "lm":
        return accuracy.as_dict(accuracy.language_model_metrics(predict, data.inputs.numpy()))
    assert data.labels is not None
    images, labels = data.inputs.numpy(), data.labels.numpy()
    if data.task == "gc":
        metrics = accuracy.as_dict(
            accuracy.gate_metrics(
                predict,
                images,
                labels,
                positive_class=int(module.positive_class),
                threshold=float(module.threshold),
            )
        )
        metrics["compression_ratio"] = round(float(module.gc.compression_ratio()), 4)
        return metrics
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
