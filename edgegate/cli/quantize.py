"""`edgegate quantize`, and the INT8 dispatch it shares with `export --int8`: both quantize,
export and judge through the pipeline, then print the same verdict and exit 1 the same way."""

# No `from __future__ import annotations`: Typer reads the parameters' Annotated types.
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from edgegate.cli.console import emit_json, fail, out, print_rows, progress_display, warn
from edgegate.cli.options import (
    CalibDataOpt,
    CalibSamplesOpt,
    CheckpointOpt,
    Choices,
    DataOpt,
    InputSizeOpt,
    JsonOpt,
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

# The options `quantize` and `export --int8` both take, named as the pipeline names them.
INT8_OPTIONS = (
    "checkpoint", "calib_data", "calib_samples", "method", "qat_epochs", "max_drop", "data",
    "input_size", "seq_len", "quantize_scan_inputs", "w8a8", "trust_code", "task",
)  # fmt: skip

W8a8Opt = Annotated[
    bool, typer.Option("--w8a8", help="Quantize activations too under weight-only profiles.")
]
ReportOpt = Annotated[
    bool, typer.Option("--report", help="Per-layer quantizability report (JSON, Markdown, PNG).")
]
StreamingOpt = Annotated[
    bool,
    typer.Option(
        "--streaming",
        help="Scan LMs and hf: LMs (their cache as states): export the streaming "
        "step (tokens, state0.. -> logits, new_state0..), calibrated over whole "
        "sequences, state carried.",
    ),
]
QuantizeStateOpt = Annotated[
    bool,
    typer.Option(
        "--quantize-state",
        help="With --streaming: quantize the state inputs too (default float), their "
        "range calibrated on states reached mid-sequence.",
    ),
]
SchemeOpt = Annotated[
    str,
    typer.Option(
        "--scheme",
        help="int8: brevitas INT8 PTQ (default). w4: weight-only INT4 for language models "
        "(AWQ-scaled groups; scan gate and output-gate projections stay int8; activations "
        "float): MatMulNBits for onnxruntime, int4 DequantizeLinear for tensorrt, XNNPACK "
        "8da4w for executorch, iOS18 int4 per-block constexprs for coreml.",
    ),
]
GroupSizeOpt = Annotated[
    int,
    typer.Option(
        "--group-size", help="--scheme w4: input features per INT4 scale (a power of two >= 16)."
    ),
]
W4MaxDropOpt = Annotated[
    float | None,
    typer.Option(
        "--max-drop",
        help="Largest loss of the export against float: top-1 points, or percent perplexity "
        "for language models (default 1.0 for int8, 3.0 for w4). Above it, exit 1.",
    ),
]
EqualizeOpt = Annotated[
    bool,
    typer.Option(
        "--equalize",
        help="Cross-layer equalization (Nagel et al. 2019) of the float model after BN "
        "folding, before calibration: layer pairs joined by identity or ReLU (and SE blocks) "
        "get balanced channel ranges, same function; hard-swish/ReLU6 pairs are left alone. "
        "Helps most with per-tensor weights.",
    ),
]
WeightGranularityOpt = Annotated[
    str | None,
    typer.Option(
        "--weight-granularity",
        metavar="channel|tensor",
        help="Weight scales: one per output channel, or one per tensor for runtimes whose "
        "kernels take per-tensor weights only (e.g. NNAPI before Android 10 / feature "
        "level 3). Default: the profile's own (per channel).",
    ),
]
TimestepReportOpt = Annotated[
    bool,
    typer.Option(
        "--timestep-report",
        help="LMs: logit SNR and top-1 agreement per position, float vs the INT8 export "
        "(timestep_report.json/.png; per-quarter error and growth in report.json).",
    ),
]


def int8_options(params: dict[str, Any]) -> dict[str, Any]:
    """The shared INT8 options out of a command's parameters (its ``locals()``)."""
    return {name: params[name] for name in INT8_OPTIONS}


def run_int8(
    quantize: Callable[..., dict[str, Any]],
    model: str,
    output: Path,
    *,
    title: str,
    json_out: bool,
    **options: Any,
) -> None:
    """Run a pipeline INT8 entry (``quantize`` or ``quantize_for_target``) with progress,
    print its verdict (JSON, or the summary titled ``INT8 <model><title>``) and exit 1 when
    the export strayed from its fake-quant model or lost more than --max-drop."""
    from edgegate.pipeline.summary import int8_rows

    with progress_display() as progress:
        result = quantize(model, output, progress=progress, **options)
    warn(result)
    if json_out:
        emit_json(result)
    else:
        scheme = "W4" if result["quant"].get("scheme") == "w4" else "INT8"
        print_rows(int8_rows(result), title=f"{scheme} {result['model']}{title}")
        out.print(f"files in {result['output_dir']}: {', '.join(result['files'])}")
    if not result["passed"]:
        fail(result, "W4 check" if result["quant"].get("scheme") == "w4" else "INT8 check")


def register(app: typer.Typer, choices: Choices) -> None:
    @app.command()
    def quantize(
        model: ModelArg,
        profile: choices.profile = "onnxruntime",
        output: OutputDirOpt = Path("edgegate-int8"),
        checkpoint: CheckpointOpt = None,
        num_classes: NumClassesOpt = None,
        pretrained: PretrainedOpt = False,
        revision: RevisionOpt = None,
        calib_data: CalibDataOpt = None,
        calib_samples: CalibSamplesOpt = None,
        method: MethodOpt = "minmax",
        qat_epochs: QatEpochsOpt = 0,
        max_drop: W4MaxDropOpt = None,
        data: DataOpt = None,
        input_size: InputSizeOpt = None,
        seq_len: SeqLenOpt = None,
        quantize_scan_inputs: ScanInputsOpt = False,
        w8a8: W8a8Opt = False,
        report: ReportOpt = False,
        streaming: StreamingOpt = False,
        quantize_state: QuantizeStateOpt = False,
        timestep_report: TimestepReportOpt = False,
        scheme: SchemeOpt = "int8",
        group_size: GroupSizeOpt = 32,
        equalize: EqualizeOpt = False,
        weight_granularity: WeightGranularityOpt = None,
        trust_code: TrustOpt = False,
        task: TaskOpt = None,
        json_out: JsonOpt = False,
    ) -> None:
        """INT8 post-training quantization (brevitas), optional QAT, and a Q/DQ export that is
        judged before it ships: exit 1 when it strays from its fake-quant model or loses more
        than --max-drop against float (the files stay, for inspection).

        Writes model.int8.pt (fake-quant state), model.int8.onnx, manifest.json and report.json
        (--scheme w4: model.w4.pt and model.w4.onnx, with sizes against the fp32 export).

        Examples:

        - `edgegate quantize mobilenet-v3-se -o out/int8`
        - `edgegate quantize gc-mobilenet --profile onnxruntime:arm64 -o out/gc-arm`
        - `edgegate quantize gc-mobilenet --profile tensorrt --method percentile --report`
        - `edgegate quantize qvit:attention=clipped --qat-epochs 2 --calib-data imgs/ -o out/q`
        - `edgegate quantize gla-lm --streaming --seq-len 512 --timestep-report -o out/gla8`
        - `edgegate quantize timm:mobilenetv3_large_100 -c mnv3.pt -o out/t8`
        - `edgegate quantize gla-lm --scheme w4 --group-size 32 --streaming -o out/gla4`
        - `edgegate quantize mobilenet-v3-large-se --weight-granularity tensor --equalize`
        """
        shared = int8_options(locals())
        spec = model_spec(model, num_classes, pretrained, revision)
        from edgegate.pipeline.quantize import quantize as run_quantize

        run_int8(
            run_quantize,
            spec,
            output,
            title="",
            json_out=json_out,
            profile=profile,
            report=report,
            streaming=streaming,
            quantize_state=quantize_state,
            timestep_report=timestep_report,
            scheme=scheme,
            group_size=group_size,
            equalize=equalize,
            granularity=weight_granularity,
            **shared,
        )
