"""`edgegate deploy`: export, validate and benchmark in one go, with one report and one
exit code for CI."""

# No `from __future__ import annotations`: Typer reads the parameters' Annotated types.
from pathlib import Path
from typing import Annotated

import typer

from edgegate.cli.console import emit_json, out, print_rows, progress_display, warn
from edgegate.cli.options import (
    CheckpointOpt,
    Choices,
    DataOpt,
    JsonOpt,
    NumClassesOpt,
    OutputDirOpt,
    PretrainedOpt,
    RevisionOpt,
    ThreadsOpt,
    TrustOpt,
    model_spec,
)


def register(app: typer.Typer, choices: Choices) -> None:
    @app.command()
    def deploy(
        model: Annotated[
            str,
            typer.Argument(
                help="Any MODEL form `export` takes (default: gc-mobilenet with shipped weights)."
            ),
        ] = "gc-mobilenet",
        target: choices.target = "onnxruntime",
        output: OutputDirOpt = Path("edgegate-out"),
        checkpoint: CheckpointOpt = None,
        num_classes: NumClassesOpt = None,
        pretrained: PretrainedOpt = False,
        revision: RevisionOpt = None,
        data: DataOpt = None,
        runs: Annotated[int, typer.Option(min=1)] = 50,
        threads: ThreadsOpt = 2,
        int8: Annotated[
            bool, typer.Option("--int8", help="Add an INT8 stage (PTQ) in OUTPUT/int8.")
        ] = False,
        profile: choices.profile = "onnxruntime",
        trust_code: TrustOpt = False,
        json_out: JsonOpt = False,
    ) -> None:
        """Export, validate against PyTorch and benchmark in one go; writes report.md and
        report.json. Exit 1 when a check fails, so it can gate CI.

        With no arguments: gc-mobilenet, its shipped weights and the built-in digits.

        Examples:

        - `edgegate deploy`
        - `edgegate deploy qvit:attention=gated -o out/qvit`
        - `edgegate deploy mobilenet-v3-se --int8 --profile tensorrt -o out/mnv3`
        - `edgegate deploy torchvision:resnet18 --pretrained -o out/r18` (where it can download)
        """
        model = model_spec(model, num_classes, pretrained, revision)
        from edgegate.pipeline.deploy import deploy as run_deploy
        from edgegate.pipeline.summary import summary_sections

        with progress_display() as progress:
            summary = run_deploy(
                model,
                output,
                target=target,
                checkpoint=checkpoint,
                data=data,
                runs=runs,
                threads=threads,
                trust_code=trust_code,
                int8_profile=profile if int8 else None,
                progress=progress,
            )
        for block in (summary["validate"], summary["bench"], *summary.get("int8", {}).values()):
            warn(block)
        if json_out:
            emit_json(summary)
        else:
            for title, rows in summary_sections(summary):
                print_rows(rows, title=title)
            out.print(f"reports: {output / 'report.md'}, {output / 'report.json'}")
        if not summary["passed"]:
            raise typer.Exit(1)
