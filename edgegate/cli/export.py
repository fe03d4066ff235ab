"""`edgegate export`: a target's model files and manifest; with --int8, the same INT8 run as
`quantize` under the target's own profile."""

# No `from __future__ import annotations`: Typer reads the parameters' Annotated types.
from pathlib import Path
from typing import Annotated, Any

import typer

from edgegate.cli.console import emit_json, out, progress_display, warn
from edgegate.cli.options import (
    CalibDataOpt,
    CalibSamplesOpt,
    CheckpointOpt,
    Choices,
    InputSizeOpt,
    JsonOpt,
    MaxDropOpt,
    MethodOpt,
    ModelArg,
    NumClassesOpt,
    OutputDirOpt,
    PretrainedOpt,
    QatEpochsOpt,
    RevisionOpt,
    ScanInputsOpt,
    SeqLenOpt,
    TaskOpt,
    TrustOpt,
    model_spec,
)
from edgegate.cli.quantize import int8_options, run_int8

PrecisionOpt = Annotated[
    str | None,
    typer.Option(
        "--precision",
        help="fp32 or fp16, where the target takes it (tensorrt: fp32 default; coreml: "
        "fp16 default, scans kept fp32).",
    ),
]
Int8Opt = Annotated[
    bool,
    typer.Option(
        "--int8",
        help="Quantize under the target's INT8 profile (explicit Q/DQ), with the "
        "calibration options below; judged as `quantize` judges.",
    ),
]
BuildOpt = Annotated[
    bool,
    typer.Option(
        "--build", help="Also build the engine here (TensorRT and a GPU needed; else exit 3)."
    ),
]
W8a8Opt = Annotated[
    bool,
    typer.Option(
        "--w8a8",
        help="With --int8 under a weight-only profile (coreml): quantize activations "
        "too, calibrated on --calib-data; gates keep their fixed [0, 1] ranges.",
    ),
]
StreamOpt = Annotated[
    bool,
    typer.Option(
        "--streaming",
        help="Scan LMs and hf: LMs: export the streaming step (tokens, state0.. -> logits, "
        "new_state0..) for token-by-token decoding; with --int8, as `quantize --streaming`.",
    ),
]
JudgeDataOpt = Annotated[
    str | None,
    typer.Option("--data", help="With --int8: the test data the export is judged on."),
]


def describe_ranges(record: dict[str, Any]) -> str:
    """'batch 1..8, seq_len 1..256 (checked at 1, 128, 129, 256)'; fixed dims with their size."""
    spans = [
        f"{r['name']} {r['min']}..{r['max']} (checked at {', '.join(map(str, r['checked']))})"
        for r in record["ranges"]
    ]
    spans += [f"{f['name']} fixed at {f['size']}" for f in record["fixed"]]
    return "; ".join(spans) or "every dim fixed"


def check_int8_flags(int8: bool, w8a8: bool, precision: str | None) -> None:
    """Refuse flag combinations that cannot mean anything, before any work."""
    from edgegate.errors import BadInput

    if w8a8 and not int8:
        raise BadInput(
            "--w8a8 quantizes activations, which needs calibration data: add --int8 "
            "(with --calib-data SRC and --calib-samples N)"
        )
    if int8 and precision is not None:
        raise BadInput(
            "--int8 and --precision exclude each other: the target's INT8 profile "
            "decides the float precision around the int8 weights"
        )


def export_float(model: str, output: Path, json_out: bool, **options: Any) -> None:
    """The float export: run it with progress, then print what it wrote."""
    from edgegate.pipeline.export import export as run_export
    from edgegate.pipeline.recurrences import recurrence_lines

    with progress_display() as progress:
        result = run_export(model, output, progress=progress, **options)
    warn(result)
    if json_out:
        emit_json(result)
        return
    out.print(f"[bold green]exported[/] {result['model']} -> {result['output_dir']}")
    for line in recurrence_lines(result.get("recurrences", {})):
        out.print(line, highlight=False)
    for stem, record in result["ranges"].items():
        out.print(f"{stem}: {describe_ranges(record)}", highlight=False)
    out.print(f"files: {', '.join(result['files'])}; custom ops: {result['custom_ops'] or 'none'}")
    out.print(f"weights: {result['weights']}")


def register(app: typer.Typer, choices: Choices) -> None:
    @app.command()
    def export(
        model: ModelArg,
        target: choices.target = "onnx",
        output: OutputDirOpt = Path("edgegate-out"),
        precision: PrecisionOpt = None,
        int8: Int8Opt = False,
        build: BuildOpt = False,
        checkpoint: CheckpointOpt = None,
        num_classes: NumClassesOpt = None,
        pretrained: PretrainedOpt = False,
        revision: RevisionOpt = None,
        input_size: InputSizeOpt = None,
        seq_len: SeqLenOpt = None,
        calib_data: CalibDataOpt = None,
        calib_samples: CalibSamplesOpt = None,
        method: MethodOpt = "minmax",
        qat_epochs: QatEpochsOpt = 0,
        max_drop: MaxDropOpt = 1.0,
        quantize_scan_inputs: ScanInputsOpt = False,
        w8a8: W8a8Opt = False,
        streaming: StreamOpt = False,
        data: JudgeDataOpt = None,
        trust_code: TrustOpt = False,
        task: TaskOpt = None,
        json_out: JsonOpt = False,
    ) -> None:
        """Export for a target: its model file (+ stage1/stage2 for gated-compression models)
        and manifest.json, with the weights' source recorded (and stored if no file holds them).
        For tensorrt, a build kit: run `bash build.sh` on the device.

        Examples:

        - `edgegate export gc-mobilenet -o out/gc`
        - `edgegate export gdn-lm --target onnxruntime --seq-len 256 -o out/gdn`
        - `edgegate export gla-lm --target tensorrt -o kit/gla` (then `bash kit/gla/build.sh`)
        - `edgegate export gla-lm --target onnxruntime --streaming -o out/gla-step` (decode step)
        - `edgegate export mobilenet-v3-se --target tensorrt --int8 --calib-samples 128 -o kit/m8`
        - `edgegate export gla-lm --target coreml -o out/gla` (fp16, scans fp32; flexible length)
        - `edgegate export mobilenet-v3-se --target coreml --int8 -o out/m8` (int8 weights)
        - `edgegate export mypkg.models:build -c mine.pt --trust-code --task image -o out/mine`
        - `edgegate export torchvision:mobilenet_v3_small --num-classes 10 -o out/tv`
        """
        shared = int8_options(locals())
        model = model_spec(model, num_classes, pretrained, revision)
        check_int8_flags(int8, w8a8, precision)
        if int8:
            from edgegate.pipeline.quantize import quantize_for_target

            run_int8(
                quantize_for_target,
                model,
                output,
                title=f" for {target}",
                json_out=json_out,
                target=target,
                build=build,
                **{**shared, "streaming": streaming},
            )
            return
        export_float(
            model,
            output,
            json_out,
            target=target,
            precision=precision,
            build=build,
            checkpoint=checkpoint,
            input_size=input_size,
            seq_len=seq_len,
            trust_code=trust_code,
            task=task,
            streaming=streaming,
        )
