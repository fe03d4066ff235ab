"""`edgegate bundle` and `edgegate judge`: on-device validation, packed here, run on the
device, judged here again."""

# No `from __future__ import annotations`: Typer reads the parameters' Annotated types.
from pathlib import Path
from typing import Annotated

import typer

from edgegate.cli.console import emit_json, print_result, print_rows, progress_display
from edgegate.cli.options import (
    CheckpointOpt,
    Choices,
    DataOpt,
    JsonOpt,
    JunitOpt,
    OutputDirOpt,
    TrustOpt,
)


def bundle(
    export_dir: Annotated[Path, typer.Argument(help="Export folder (with manifest.json).")],
    output: OutputDirOpt,
    samples: Annotated[
        int | None,
        typer.Option(
            "--samples",
            min=1,
            help="Test samples to run on the device (default: 64 images or 4 LM sequences).",
        ),
    ] = None,
    data: DataOpt = None,
    checkpoint: CheckpointOpt = None,
    trust_code: TrustOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Pack an export for on-device validation: model files, inputs, PyTorch's outputs,
    tolerances and run.py (needs only numpy and the device's runtime).

    On the device, `python3 run.py` writes results.json; copy the folder back and run
    `edgegate judge` on it.

    Examples:

    - `edgegate bundle out/gc -o gc-bundle --samples 128`
    - `edgegate bundle out/lm -o lm-bundle --data corpus.txt --json`
    """
    from edgegate.pipeline.bundle import bundle as run_bundle

    with progress_display() as progress:
        result = run_bundle(
            export_dir,
            output,
            samples=samples,
            data=data,
            checkpoint=checkpoint,
            trust_code=trust_code,
            progress=progress,
        )
    if json_out:
        emit_json(result)
        return
    print_rows(
        [
            ("bundle", result["bundle"]),
            ("target / runtime", f"{result['target']} / {result['runtime']}"),
            ("samples", f"{result['samples']} of {result['data']} ({result['precision']})"),
            ("on the device", f"cd {result['bundle']} && {result['run']}"),
            ("then here", f"edgegate judge {result['bundle']}"),
        ]
    )


def judge(
    bundle_dir: Annotated[Path, typer.Argument(help="Bundle folder holding results.json.")],
    results: Annotated[
        Path | None,
        typer.Option("--results", help="The device's results.json (default: in the bundle)."),
    ] = None,
    junit: JunitOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Judge a device run on the host: exit 0 pass, 1 tolerance broken, 2 bad or tampered
    bundle or results.

    Examples:

    - `edgegate judge gc-bundle`
    - `edgegate judge gc-bundle --results jetson/results.json --junit device.xml --json`
    """
    from edgegate.pipeline.judge import judge as run_judge
    from edgegate.pipeline.summary import judge_rows

    result = run_judge(bundle_dir, results=results, junit=junit)
    print_result(result, json_out, judge_rows)
    if not result["passed"]:
        raise typer.Exit(1)


def register(app: typer.Typer, choices: Choices) -> None:
    app.command()(bundle)
    app.command()(judge)
