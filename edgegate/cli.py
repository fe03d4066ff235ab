"""The `edgegate` command line: thin wrappers that parse, call the library and print.

Errors derived from EdgegateError become one line on stderr and their exit code
(design.md §7); `--debug` anywhere on the command line shows the traceback instead.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from edgegate import __version__
from edgegate.errors import EdgegateError

EXIT_INTERNAL_ERROR = 70  # a bug in edgegate, not the user's input

app = typer.Typer(
    name="edgegate",
    help=(
        "Deploy gated neural networks (SE gates, gated compression, gated attention, "
        "gated linear recurrences) to edge runtimes.\n\n"
        "Exit codes: 0 ok, 1 validation failed, 2 bad input, 3 backend unavailable. "
        "Add --debug anywhere to see tracebacks."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
out = Console()
err = Console(stderr=True)

ModelArg = Annotated[
    str,
    typer.Argument(
        help="Zoo name with options (`qvit:attention=gated`), `pkg.module:factory`, "
        "or a `.pt2` file."
    ),
]
CheckpointOpt = Annotated[
    Path | None, typer.Option("--checkpoint", "-c", help="Checkpoint (.pt) to load.")
]
DataOpt = Annotated[
    str | None,
    typer.Option(
        "--data",
        help="`digits` / `stdlib` (built-in), a `.npz` file, an image folder, or a text file.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
TrustOpt = Annotated[
    bool,
    typer.Option("--trust-code", help="Allow importing a user factory or unpickling a full model."),
]
InputSizeOpt = Annotated[
    int | None, typer.Option("--input-size", min=1, help="Image side in pixels.")
]
SeqLenOpt = Annotated[int | None, typer.Option("--seq-len", min=1, help="Sequence length.")]
TaskOpt = Annotated[
    str | None,
    typer.Option("--task", help="For non-zoo models: image, gc or lm (zoo models know theirs)."),
]


def _emit_json(payload: Any) -> None:
    out.print_json(json.dumps(payload))


def _print_version(value: bool) -> None:
    if value:
        out.print(f"edgegate {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks on errors (also after a command).")
    ] = False,
) -> None:
    """Global options; `--debug` is read by main() wherever it appears."""


@app.command()
def models(json_out: JsonOpt = False) -> None:
    """List the model zoo with parameter counts and MACs at each model's default input.

    Example: `edgegate models --json`
    """
    from edgegate import pipeline

    rows = pipeline.model_table()
    if json_out:
        _emit_json(rows)
        return
    table = Table(title="edgegate model zoo", caption="MACs at the default input; --json for more")
    for col in ("model", "task", "params", "MACs", "input"):
        table.add_column(col, no_wrap=True)
    table.add_column("shipped weights")
    for r in rows:
        table.add_row(
            r["name"],
            r["task"],
            f"{r['params'] / 1e3:.0f}k",
            f"{r['macs'] / 1e6:.1f}M",
            "x".join(map(str, r["default_input"])),
            "\n".join(s.partition(":")[2] or "default" for s in r["shipped_weights"]) or "-",
        )
    out.print(table)


@app.command()
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
    trust_code: TrustOpt = False,
    task: TaskOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Train a model and save a checkpoint that records its test metrics.

    Examples:

    - `edgegate train mobilenet-v3-se --epochs 30 -o mnv3.pt`
    - `edgegate train gc-mobilenet --epochs 1 -o gc.pt`
    - `edgegate train qlm:attention=gated --data stdlib --epochs 2 -o qlm.pt`
    """
    from edgegate import pipeline
    from edgegate.train import TrainConfig

    config = TrainConfig(
        epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, max_steps_per_epoch=max_steps
    )
    with _progress("training") as on_step:
        summary = pipeline.train(
            model,
            output,
            config,
            data=data,
            input_size=input_size,
            seq_len=seq_len,
            checkpoint=checkpoint,
            trust_code=trust_code,
            task=task,
            command=_command_line(),
            on_step=on_step,
        )
    if json_out:
        _emit_json(summary)
        return
    out.print(f"[bold green]saved[/] {summary['checkpoint']}  ({summary['spec']})")
    _print_metrics(summary["metrics"])


@app.command()
def evaluate(
    model: ModelArg,
    checkpoint: CheckpointOpt = None,
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
    """
    from edgegate import pipeline

    result = pipeline.evaluate(
        model,
        checkpoint=checkpoint,
        data=data,
        split=split,
        input_size=input_size,
        seq_len=seq_len,
        trust_code=trust_code,
        task=task,
    )
    if json_out:
        _emit_json(result)
        return
    out.print(f"[bold]{result['spec']}[/] on {result['data']} ({result['split']} split)")
    _print_metrics(result["metrics"])


TargetOpt = Annotated[
    str,
    typer.Option("--target", "-t", help="onnx (custom nodes + portable fallback) or onnxruntime."),
]
ThreadsOpt = Annotated[int, typer.Option("--threads", min=1, help="Intra-op threads.")]


@app.command()
def export(
    model: ModelArg,
    target: TargetOpt = "onnx",
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder.")] = Path(
        "edgegate-out"
    ),
    checkpoint: CheckpointOpt = None,
    input_size: InputSizeOpt = None,
    seq_len: SeqLenOpt = None,
    trust_code: TrustOpt = False,
    task: TaskOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Export to ONNX: model.onnx (+ stage1/stage2 for gated-compression models) and manifest.json.

    Examples:

    - `edgegate export gc-mobilenet -o out/gc`
    - `edgegate export gdn-lm --target onnxruntime --seq-len 256 -c gdn.pt -o out/gdn`
    """
    from edgegate import pipeline

    result = pipeline.export(
        model,
        output,
        target=target,
        checkpoint=checkpoint,
        input_size=input_size,
        seq_len=seq_len,
        trust_code=trust_code,
        task=task,
    )
    if json_out:
        _emit_json(result)
        return
    out.print(f"[bold green]exported[/] {result['model']} -> {result['output_dir']}")
    out.print(f"files: {', '.join(result['files'])}; custom ops: {result['custom_ops'] or 'none'}")
    out.print(f"weights: {result['weights']}")


@app.command()
def quantize(
    model: ModelArg,
    profile: Annotated[
        str,
        typer.Option(
            "--profile",
            "-p",
            help="Target rules: onnxruntime (this host's CPU), "
            "onnxruntime:arm64|x86-vnni|x86-avx2, tensorrt or coreml.",
        ),
    ] = "onnxruntime",
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder.")] = Path(
        "edgegate-int8"
    ),
    checkpoint: CheckpointOpt = None,
    calib_data: Annotated[
        str | None,
        typer.Option(
            "--calib-data",
            help="Calibration inputs: `digits`/`stdlib` (built-in calib split), a `.npz` file, "
            "an image folder or a text file.",
        ),
    ] = None,
    calib_samples: Annotated[
        int, typer.Option("--calib-samples", help="Calibration samples (images or sequences).")
    ] = 256,
    method: Annotated[
        str, typer.Option("--method", "-m", help="Calibration: minmax, percentile or mse.")
    ] = "minmax",
    qat_epochs: Annotated[
        int, typer.Option("--qat-epochs", help="Quantization-aware fine-tuning epochs after PTQ.")
    ] = 0,
    data: DataOpt = None,
    input_size: InputSizeOpt = None,
    seq_len: SeqLenOpt = None,
    quantize_scan_inputs: Annotated[
        bool,
        typer.Option(
            "--quantize-scan-inputs", help="Also quantize the q/k/v projections feeding scans."
        ),
    ] = False,
    w8a8: Annotated[
        bool, typer.Option("--w8a8", help="Quantize activations too under weight-only profiles.")
    ] = False,
    report: Annotated[
        bool,
        typer.Option("--report", help="Per-layer quantizability report (JSON, Markdown, PNG)."),
    ] = False,
    trust_code: TrustOpt = False,
    task: TaskOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """INT8 post-training quantization (brevitas) with calibration, optional QAT, and QDQ ONNX.

    Writes model.int8.pt (fake-quant state), model.int8.onnx, manifest.json and report.json
    (float vs INT8 accuracy on the test split, gate-decision flip rate).

    Examples:

    - `edgegate quantize mobilenet-v3-se -o out/int8`
    - `edgegate quantize gc-mobilenet --profile tensorrt --method percentile --report`
    - `edgegate quantize qvit:attention=clipped --qat-epochs 2 --calib-data imgs/ -o out/qvit`
    """
    from edgegate import int8

    with _phases() as progress:
        result = int8.quantize(
            model,
            output,
            profile=profile,
            method=method,
            checkpoint=checkpoint,
            calib_data=calib_data,
            calib_samples=calib_samples,
            data=data,
            qat_epochs=qat_epochs,
            input_size=input_size,
            seq_len=seq_len,
            quantize_scan_inputs=quantize_scan_inputs,
            w8a8=w8a8,
            report=report,
            trust_code=trust_code,
            task=task,
            progress=progress,
        )
    if json_out:
        _emit_json(result)
        return
    profile_name = result["quant"]["profile"]
    _print_rows(int8_rows(result), title=f"INT8 {result['model']} ({profile_name}, {method})")
    out.print(f"files in {result['output_dir']}: {', '.join(result['files'])}")


def int8_rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    """Human summary of a quantize run (the CLI table and deploy's report share it)."""
    acc = result["accuracy"]
    key = "perplexity" if result["task"] == "lm" else "top1"
    rows = [(f"{stage} {key}", f"{acc[stage][key]:.4g}") for stage in acc]
    agreement = result["onnx_vs_fake_quant"]
    rows.append(("onnx vs fake-quant top-1", f"{agreement['top1_agreement']:.2f} %"))
    rows.append(("  where not a near-tie", f"{agreement['decisive_top1_agreement']:.2f} %"))
    if result.get("kernel_agreement") is not None:
        rows.append(("fused kernels vs dequantized", f"{result['kernel_agreement']:.2f} % top-1"))
    if "gate_flip_rate" in result:
        rows.append(
            ("gate flips (onnx vs float)", f"{result['gate_flip_rate']['onnx_vs_float']} %")
        )
    recovery = result.get("qat_recovery")
    if recovery is not None and recovery["recovered_fraction"] is not None:
        rows.append(("QAT recovered", f"{100 * recovery['recovered_fraction']:.0f} % of PTQ loss"))
    return rows


@app.command()
def validate(
    artifact: Annotated[Path, typer.Argument(help="Export folder or a .onnx file.")],
    reference: Annotated[
        str | None,
        typer.Option("--reference", "-r", help="Reference model spec (default: the manifest's)."),
    ] = None,
    checkpoint: CheckpointOpt = None,
    data: DataOpt = None,
    parity_samples: Annotated[
        int, typer.Option(min=1, help="Samples compared output by output.")
    ] = 256,
    junit: Annotated[Path | None, typer.Option("--junit", help="Write a JUnit XML report.")] = None,
    threads: Annotated[int | None, typer.Option("--threads", min=1)] = None,
    trust_code: TrustOpt = False,
    task: TaskOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Check an exported model against PyTorch: exit 0 pass, 1 tolerance broken, 2 bad input.

    Examples:

    - `edgegate validate out/gc`
    - `edgegate validate model.onnx --reference qvit:attention=gated --junit parity.xml`
    """
    from edgegate import pipeline
    from edgegate.validate import report as reports

    result = pipeline.validate(
        artifact,
        reference=reference,
        checkpoint=checkpoint,
        data=data,
        parity_samples=parity_samples,
        threads=threads,
        trust_code=trust_code,
        task=task,
    )
    _warn(result)
    if junit is not None:
        reports.write_junit(junit, "edgegate.validate", reports.parity_cases(result))
    if json_out:
        _emit_json(result)
    else:
        _print_rows(pipeline.validation_rows(result))
    if not result["passed"]:
        raise typer.Exit(1)


@app.command()
def bench(
    artifact: Annotated[Path, typer.Argument(help="Export folder or a .onnx file.")],
    runs: Annotated[int, typer.Option(min=1, help="Timed runs after warm-up.")] = 50,
    warmup: Annotated[int, typer.Option(min=0)] = 5,
    threads: ThreadsOpt = 2,
    batch: Annotated[int, typer.Option(min=1)] = 1,
    positive_rate: Annotated[
        float, typer.Option(help="Share of positives in the GC two-stage stream.")
    ] = 0.10,
    plot: Annotated[Path | None, typer.Option("--plot", help="Write a PNG latency plot.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Latency (p50/p90/p99/mean), throughput and peak memory of an exported model.

    Examples:

    - `edgegate bench out/gc --runs 200 --plot latency.png`
    - `edgegate bench out/qlm --threads 1 --batch 4 --json`
    """
    from edgegate import pipeline

    result = pipeline.bench(
        artifact,
        runs=runs,
        warmup=warmup,
        threads=threads,
        batch=batch,
        positive_rate=positive_rate,
        plot=plot,
    )
    _warn(result)
    if json_out:
        _emit_json(result)
        return
    _print_rows(pipeline.bench_rows(result))


@app.command()
def deploy(
    model: Annotated[
        str, typer.Argument(help="Model spec (default: gc-mobilenet with shipped weights).")
    ] = "gc-mobilenet",
    target: TargetOpt = "onnxruntime",
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder.")] = Path(
        "edgegate-out"
    ),
    checkpoint: CheckpointOpt = None,
    data: DataOpt = None,
    runs: Annotated[int, typer.Option(min=1)] = 50,
    threads: ThreadsOpt = 2,
    int8: Annotated[
        bool, typer.Option("--int8", help="Add an INT8 stage (PTQ) in OUTPUT/int8.")
    ] = False,
    profile: Annotated[
        str, typer.Option("--profile", "-p", help="INT8 target profile (with --int8).")
    ] = "onnxruntime",
    trust_code: TrustOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Export, validate against PyTorch and benchmark in one go; writes report.md and report.json.

    With no arguments: gc-mobilenet, its shipped weights and the built-in digits.
    Exit code 1 when parity fails, so it can gate CI.

    Examples:

    - `edgegate deploy`
    - `edgegate deploy qvit:attention=gated -o out/qvit`
    - `edgegate deploy mobilenet-v3-se --int8 --profile tensorrt -o out/mnv3`
    """
    from edgegate import pipeline

    with err.status("deploying") as status:
        summary = pipeline.deploy(
            model,
            output,
            target=target,
            checkpoint=checkpoint,
            data=data,
            runs=runs,
            threads=threads,
            trust_code=trust_code,
            int8_profile=profile if int8 else None,
            on_stage=lambda name: status.update(f"[bold]{name}[/] {model}"),
        )
    if json_out:
        _emit_json(summary)
    else:
        for title, rows in pipeline.summary_sections(summary):
            _print_rows(rows, title=title)
        out.print(f"reports: {output / 'report.md'}, {output / 'report.json'}")
    if not summary["passed"]:
        raise typer.Exit(1)


def _warn(result: dict[str, Any]) -> None:
    for line in result.get("warnings", []):
        err.print(f"[bold yellow]warning:[/] {line}", highlight=False, soft_wrap=True)


def _print_rows(rows: list[tuple[str, str]], title: str | None = None) -> None:
    table = Table(title=title, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, value)
    out.print(table)


def _print_metrics(metrics: dict[str, Any]) -> None:
    table = Table(show_header=False, box=None)
    for key, value in metrics.items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    out.print(table)


class _phases:
    """One progress bar per phase (calibrate, bias correction, QAT), on stderr."""

    def __init__(self) -> None:
        self._bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err,
        )
        self._tasks: dict[str, Any] = {}

    def __enter__(self):
        def on_progress(phase: str, done: int, total: int) -> None:
            if not self._tasks:
                self._bar.start()  # lazily: an early bad-input error stays one clean line
            if phase not in self._tasks:
                self._tasks[phase] = self._bar.add_task(phase, total=total)
            self._bar.update(self._tasks[phase], completed=done)

        return on_progress

    def __exit__(self, *exc: object) -> None:
        if self._tasks:
            self._bar.stop()


class _progress:
    """A rich progress bar on stderr (so --json stdout stays clean), fed by step callbacks."""

    def __init__(self, label: str) -> None:
        self._bar = Progress(
            TextColumn(f"[bold]{label}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TimeRemainingColumn(),
            console=err,
            transient=False,
        )
        self._task: int | None = None

    def __enter__(self):
        self._bar.start()

        def on_step(step: int, total: int, loss: float) -> None:
            if self._task is None:
                self._task = self._bar.add_task("", total=total, loss=loss)
            self._bar.update(self._task, completed=step, loss=loss)

        return on_step

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()


_invocation: list[str] = []  # the arguments main() was given, recorded in checkpoints


def _command_line() -> str:
    return " ".join(["edgegate", *_invocation])


def main(argv: list[str] | None = None) -> int:
    """Console-script entry: map EdgegateError to its exit code and one line.

    Typer runs in standalone mode, so usage errors keep their usual message and exit 2.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    _invocation[:] = args
    try:
        app(args=args, prog_name="edgegate")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0
    except EdgegateError as exc:
        if debug:
            raise
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except Exception as exc:  # a bug in edgegate: still one line unless --debug
        if debug:
            raise
        err.print(
            f"[bold red]internal error:[/] {type(exc).__name__}: {exc} (rerun with --debug)",
            highlight=False,
            soft_wrap=True,
        )
        return EXIT_INTERNAL_ERROR
    return 0


def console_main() -> None:
    sys.exit(main())
