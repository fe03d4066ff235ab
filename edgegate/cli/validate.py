"""`edgegate validate`: an export against PyTorch, with the exit codes CI gates on."""

# No `from __future__ import annotations`: Typer reads the parameters' Annotated types.
from typing import Annotated

import typer

from edgegate.cli.console import print_result, progress_display
from edgegate.cli.options import (
    ArtifactArg,
    CheckpointOpt,
    Choices,
    DataOpt,
    JsonOpt,
    JunitOpt,
    TaskOpt,
    TrustOpt,
)


def validate(
    artifact: ArtifactArg,
    reference: Annotated[
        str | None,
        typer.Option(
            "--reference",
            "-r",
            help="Reference model spec (default: the manifest's), e.g. "
            "`timm:efficientnet_b0:num_classes=10`.",
        ),
    ] = None,
    checkpoint: CheckpointOpt = None,
    data: DataOpt = None,
    parity_samples: Annotated[
        int, typer.Option(min=1, help="Samples compared output by output.")
    ] = 256,
    junit: JunitOpt = None,
    threads: Annotated[int | None, typer.Option("--threads", min=1)] = None,
    trust_code: TrustOpt = False,
    task: TaskOpt = None,
    localize: Annotated[
        bool,
        typer.Option(
            "--localize",
            help="Name the first module whose ONNX value breaks its layer tolerance "
            "(also done whenever parity fails).",
        ),
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Check an export against PyTorch: exit 0 pass, 1 tolerance broken, 2 bad input.

    The reference's weights are the ones the export recorded; -c overrides them. When
    parity fails (or with --localize), each module's output is compared with its ONNX
    value and the first that breaks its tolerance is named.

    Examples:

    - `edgegate validate out/gc`
    - `edgegate validate model.onnx --reference qvit:attention=gated --junit parity.xml`
    - `edgegate validate out/m8 --localize --json`
    """
    from edgegate.pipeline.summary import validation_rows
    from edgegate.pipeline.validate import validate as run_validate

    with progress_display() as progress:
        result = run_validate(
            artifact,
            reference=reference,
            checkpoint=checkpoint,
            data=data,
            parity_samples=parity_samples,
            threads=threads,
            trust_code=trust_code,
            task=task,
            junit=junit,
            localize=localize,
            progress=progress,
        )
    print_result(result, json_out, validation_rows)
    if not result["passed"]:
        raise typer.Exit(1)


def register(app: typer.Typer, choices: Choices) -> None:
    app.command()(validate)
