"""The zoo stages: list the models, train one, score one."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from edgegate.errors import BadInput
from edgegate.models import (
    WEIGHTS_DIR,
    build_model,
    count_macs,
    count_params,
    example_inputs,
    list_models,
    load_checkpoint,
    load_model,
    parse_spec,
    round_to_half,
    save_checkpoint,
    shipped_weights,
)
from edgegate.outputs import check_output_file
from edgegate.pipeline.recurrences import prepare_recurrences
from edgegate.pipeline.tasks import resolve_task
from edgegate.progress import SILENT, Progress
from edgegate.train import TrainConfig, train_model


def model_table() -> list[dict[str, Any]]:
    """One row per zoo model: size and cost at the default input, and shipped variants."""
    shipped = _shipped_by_model()
    rows = []
    for info in list_models():
        module = build_model(info.name).eval()
        rows.append(
            {
                "name": info.name,
                "task": info.task,
                "params": count_params(module),
                "macs": count_macs(module, example_inputs(info)),
                "default_input": list(info.default_input),
                "options": dict(info.options),
                "shipped_weights": shipped.get(info.name, []),
                "train_command": info.train_command or None,
                "description": info.description,
            }
        )
    return rows


def _shipped_by_model() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in sorted(WEIGHTS_DIR.glob("*.pt")):
        spec = load_checkpoint(path)["spec"]
        found.setdefault(parse_spec(spec)[0], []).append(spec)
    return found


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
    half: bool = False,
    on_step: Callable[[int, int, float], None] | None = None,
    progress: Progress = SILENT,
) -> dict[str, Any]:
    """Train from scratch (or from ``checkpoint``), score on the test split, save atomically.

    ``half`` rounds the weights to float16 before scoring and stores them so: the file is
    half the size and its recorded metrics are those of the weights it holds.
    """
    output = Path(output)
    if output.is_dir():
        raise BadInput(f"output '{output}' is a directory: give a checkpoint file path")
    check_output_file(output, "checkpoint")
    loaded = load_model(model, checkpoint, trust_code=trust_code, pretrained=False)
    kind = resolve_task(loaded, task)
    with progress.phase("recognise recurrences"):  # edgegate's chunked scans train faster
        probe = kind.example(loaded, batch=2, input_size=input_size, seq_len=seq_len)
        prepare_recurrences(loaded.module, probe)
    train_data = kind.load(loaded, data, "train", input_size=input_size, seq_len=seq_len)
    test_data = kind.load(loaded, data, "test", input_size=input_size, seq_len=seq_len)

    def step(done: int, total: int, loss: float) -> None:
        progress.step("training", done, total, f"loss {loss:.4f}")
        if on_step is not None:
            on_step(done, total, loss)

    result = train_model(
        loaded.module,
        kind.training_loss(config),
        train_data.inputs,
        train_data.labels,
        config,
        on_step=step,
    )
    if half:
        round_to_half(result.module)
    with progress.phase(f"score on {test_data.source} test split"):
        metrics = kind.score_module(result.module, test_data)
    extra = {
        "command": command,
        "data": train_data.source,
        "epochs": config.epochs,
        "steps": result.steps,
        "final_loss": round(result.epoch_losses[-1], 5) if result.epoch_losses else None,
        "torch": torch.__version__,
        "stored_as": "float16" if half else "float32",
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(output, result.module, loaded.spec, metrics=metrics, extra=extra, half=half)
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
    progress: Progress = SILENT,
) -> dict[str, Any]:
    """Score a model (shipped weights unless a checkpoint is given) on a data split."""
    loaded = load_model(model, checkpoint, trust_code=trust_code)
    if checkpoint is None and loaded.info is not None and shipped_weights(loaded.spec) is None:
        command = loaded.info.train_command or f"edgegate train {loaded.spec} -o ckpt.pt"
        raise BadInput(
            f"no shipped weights for '{loaded.spec}': pass --checkpoint (train one with "
            f"`{command}`)"
        )
    kind = resolve_task(loaded, task)
    eval_data = kind.load(loaded, data, split, input_size=input_size, seq_len=seq_len)
    with progress.phase(f"score on {eval_data.source} {split} split"):
        metrics = kind.score_module(loaded.module, eval_data)
    return {
        "spec": loaded.spec,
        "task": kind.name,
        "data": eval_data.source,
        "split": split,
        "metrics": metrics,
        "recorded_metrics": loaded.metrics,
    }
