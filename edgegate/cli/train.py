"""`edgegate train` and `edgegate evaluate`: make a checkpoint, and score one."""

# No `from __future__ import annotations`: Typer reads the parameters' Annotated types.
from pathlib import Path
from typing import Annotated

import typer

from edgegate.cli.console import command_line, emit_json, out, print_metrics, progress_display
from edgegate.cli.options import (
    CheckpointOpt,
    Choices,
    DataOpt,
    InputSizeOpt,
    JsonOpt,
    ModelArg,
    NumClassesOpt,
    PretrainedOpt,
    RevisionOpt,
    SeqLenOpt,
    TaskOpt,
    TrustOpt,
    model_spec,
)


def train(
    model: ModelArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the checkpoint.")],
    data: DataOpt = None,
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the training split.")] = 10,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    lr: Annotated[float, typer.Option(min=0.0, help="Peak AdamW learning rate.")] = 3e-3,
    seed: int = 0,
    max_steps: Annotated[
        int | None, typer.Option(min=1, help="Cap the steps per epoch (smoke runs).")
    ] = None,
    input_size: InputSizeOpt = None,
    seq_len: SeqLenOpt = None,
    checkpoint: CheckpointOpt = None,
    num_classes: NumClassesOpt = None,
    pretrained: PretrainedOpt = False,
    revision: RevisionOpt = None,
    trust_code: TrustOpt = False,
    task: TaskOpt = None,
    half: Annotated[
        bool,
        typer.Option(
            "--half",
            help="Store the weights as float16 (half the file); the recorded metrics "
            "are measured with the rounded weights.",
        ),
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Train a model and save a checkpoint that records its test metrics.

    Examples:

    - `edgegate train mobilenet-v3-se --epochs 30 -o mnv3.pt`
    - `edgegate train gc-mobilenet --epochs 1 -o gc.pt`
    - `edgegate train gla-lm --data stdlib --epochs 2 -o gla.pt`
    - `edgegate train mobilenet-v3-large-se --epochs 20 --half -o large.pt`
    - `edgegate train timm:efficientnet_b0 --num-classes 10 --epochs 1 -o effb0.pt`
    """
    model = model_spec(model, num_classes, pretrained, revision)
    from edgegate.pipeline.zoo import train as run_train
    from edgegate.train import TrainConfig

    config = TrainConfig(
        epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, max_steps_per_epoch=max_steps
    )
    with progress_display() as progress:
        summary = run_train(
            model,
            output,
            config,
            data=data,
            input_size=input_size,
            seq_len=seq_len,
            checkpoint=checkpoint,
            trust_code=trust_code,
            task=task,
            command=command_line(),
            half=half,
            progress=progress,
        )
    if json_out:
        emit_json(summary)
        return
    out.print(f"[bold green]saved[/] {summary['checkpoint']}  ({summary['spec']})")
    print_metrics(summary["metrics"])


def evaluate(
    model: ModelArg,
    checkpoint: CheckpointOpt = None,
    num_classes: NumClassesOpt = None,
    pretrained: PretrainedOpt = False,
    revision: RevisionOpt = None,
    data: DataOpt = None,
    split: Annotated[str, typer.Option(help="Built-in split: train, calib or test.")] = "test",
    input_size: InputSizeOpt = None,
    seq_len: SeqLenOpt = None,
    trust_code: TrustOpt = False,
    task: TaskOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Score a model (shipped weights by default) on a data split.

    Examples:

    - `edgegate evaluate gc-mobilenet`
    - `edgegate evaluate qvit:attention=clipped --json`
    - `edgegate evaluate mobilenet-v3-se -c mnv3.pt --data my_images/`
    - `edgegate evaluate effb0.pt` (the checkpoint records timm:efficientnet_b0, 10 classes)
    """
    model = model_spec(model, num_classes, pretrained, revision)
    from edgegate.pipeline.zoo import evaluate as run_evaluate

    with progress_display() as progress:
        result = run_evaluate(
            model,
            checkpoint=checkpoint,
            data=data,
            split=split,
            input_size=input_size,
            seq_len=seq_len,
            trust_code=trust_code,
            task=task,
            progress=progress,
        )
    if json_out:
        emit_json(result)
        return
    out.print(f"[bold]{result['spec']}[/] on {result['data']} ({result['split']} split)")
    print_metrics(result["metrics"])


def register(app: typer.Typer, choices: Choices) -> None:
    app.command()(train)
    app.command()(evaluate)
