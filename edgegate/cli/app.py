"""The `edgegate` command line: thin wrappers that parse, call the pipeline and print.

The app is built per invocation (``build_app``), so its ``--target`` and ``--profile`` choices
are always the registries' current contents. Errors derived from EdgegateError become one
line on stderr and their exit code (design.md §7); `--debug` shows the traceback instead.
"""

# No `from __future__ import annotations` here: the commands' Annotated option types are
# local to build_app (their choices come from the registries), and Typer must see them
# evaluated, not as strings it would look up in the module's globals.
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgegate import __version__
from edgegate.cli.progress import ConsoleProgress
from edgegate.errors import EXIT_BAD_INPUT, EdgegateError

EXIT_INTERNAL_ERROR = 70  # a bug in edgegate, not the user's input
HELP = (
    "Deploy gated neural networks (SE gates, gated compression, gated attention, "
    "gated linear recurrences) to edge runtimes.\n\n"
    "Exit codes: 0 ok, 1 validation failed, 2 bad input, 3 backend unavailable. "
    "Add --debug anywhere to see tracebacks."
)

out = Console(emoji=False)  # a spec like `timm:x:num_classes=10` is not an emoji code
err = Console(stderr=True, emoji=False)
_invocation: list[str] = []  # the arguments main() was given, recorded in checkpoints


def _emit_json(payload: Any) -> None:
    out.print_json(json.dumps(payload))


def _command_line() -> str:
    return " ".join(["edgegate", *_invocation])


def _warn(result: dict[str, Any]) -> None:
    for line in result.get("warnings", []):
        err.print(f"[bold yellow]warning:[/] {escape(line)}", highlight=False, soft_wrap=True)


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


@contextmanager
def _progress() -> Iterator[ConsoleProgress]:
    progress = ConsoleProgress(err)
    try:
        yield progress
    finally:
        progress.close()


def describe_ranges(record: dict[str, Any]) -> str:
    """'batch 1..8, seq_len 1..256 (checked at 1, 128, 129, 256)'; fixed dims with their size."""
    spans = [
        f"{r['name']} {r['min']}..{r['max']} (checked at {', '.join(map(str, r['checked']))})"
        for r in record["ranges"]
    ]
    spans += [f"{f['name']} fixed at {f['size']}" for f in record["fixed"]]
    return "; ".join(spans) or "every dim fixed"


def _model_spec(
    model: str, num_classes: int | None, pretrained: bool, revision: str | None = None
) -> str:
    """The MODEL argument with --num-classes / --pretrained (timm:/torchvision:) and
    --revision (hf: hub ids) folded in."""
    from edgegate.models import with_vision_options
    from edgegate.models.hf import with_revision

    spec = with_revision(model, revision)
    return with_vision_options(spec, num_classes=num_classes, pretrained=pretrained)


def _print_recognised(json_out: bool) -> None:
    from edgegate.recognise.families import recognised_families

    rows = recognised_families()
    if json_out:
        _emit_json(rows)
        return
    table = Table(title="blocks edgegate recognises in any model", caption="--json for details")
    table.add_column("family", no_wrap=True)
    for col in ("becomes", "keyed by", "library models"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["family"], r["becomes"], r["keyed_by"], ", ".join(r["models"]) or "-")
    out.print(table)


def _fail(result: dict[str, Any], what: str) -> None:
    """Exit 1 with one line naming what broke."""
    reasons = "; ".join(result.get("failures", [])) or "a tolerance was broken"
    err.print(f"[bold red]{what} failed:[/] {escape(reasons)}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def build_app() -> typer.Typer:
    """The Typer app, its choices read from the target and profile registries."""
    from edgegate.quant.profiles import check_profile_name, profile_names
    from edgegate.targets import check_target_name, target_names

    app = typer.Typer(
        name="edgegate",
        help=HELP,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode="markdown",
    )
    # A choice is checked against its registry while the command line is parsed, so a wrong
    # one fails before any work, with the same one line the library gives ("unknown target
    # 'x': expected one of ..."); the help lists the registry's names.
    targets = Choice(target_names(), check_target_name)
    profiles = Choice(profile_names(), check_profile_name)
    _register(app, targets, profiles)
    return app


class Choice:
    """A ``--target`` / ``--profile`` value: one of a registry's names, checked by the
    registry's own function."""

    def __init__(self, names: list[str], check) -> None:
        self.names, self.check = names, check

    @property
    def metavar(self) -> str:
        return "[" + "|".join(self.names) + "]"


def _register(app: typer.Typer, targets: Choice, profiles: Choice) -> None:
    """Define every command on ``app``."""
    model_arg = typer.Argument(
        help="Zoo name with options (`qvit:attention=gated`), `timm:NAME` or "
        "`torchvision:NAME` (an image classifier; needs the `[vision]` extra), "
        "`module:factory` (with --trust-code), a `.pt2` file, or a checkpoint (.pt) that "
        "records its model."
    )
    ModelArg = Annotated[str, model_arg]
    NumClassesOpt = Annotated[
        int | None,
        typer.Option(
            "--num-classes",
            help="timm:/torchvision: models: classes of the head (default: the library's, "
            "1000); recorded with the model, so a checkpoint reloads without it.",
        ),
    ]
    PretrainedOpt = Annotated[
        bool,
        typer.Option(
            "--pretrained",
            help="timm:/torchvision: models: start from the library's pretrained weights "
            "(its local cache, else a download); a head resized by --num-classes starts fresh.",
        ),
    ]
    RevisionOpt = Annotated[
        str | None,
        typer.Option(
            "--revision",
            help="hf: hub ids: the branch, tag or commit to load (same as hf:ORG/NAME@REV).",
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
        typer.Option(
            "--trust-code", help="Allow importing a user factory or unpickling a full model."
        ),
    ]
    InputSizeOpt = Annotated[
        int | None, typer.Option("--input-size", min=1, help="Image side in pixels.")
    ]
    SeqLenOpt = Annotated[int | None, typer.Option("--seq-len", min=1, help="Sequence length.")]
    TaskOpt = Annotated[
        str | None,
        typer.Option(
            "--task", help="For non-zoo models: image, gc or lm (zoo models know theirs)."
        ),
    ]
    TargetOpt = Annotated[
        str,
        typer.Option(
            "--target",
            "-t",
            parser=targets.check,
            metavar=targets.metavar,
            help="Deployment target (`edgegate targets` lists what each needs).",
        ),
    ]
    ProfileOpt = Annotated[
        str,
        typer.Option(
            "--profile",
            "-p",
            parser=profiles.check,
            metavar=profiles.metavar,
            help="INT8 rules of a target; plain `onnxruntime` means this host's CPU "
            "(x86-vnni, x86-avx2 or arm64).",
        ),
    ]
    CalibDataOpt = Annotated[
        str | None,
        typer.Option(
            "--calib-data",
            help="Calibration inputs: `digits`/`stdlib` (built-in calib split), a `.npz` "
            "file, an image folder or a text file.",
        ),
    ]
    CalibSamplesOpt = Annotated[
        int | None,
        typer.Option(
            "--calib-samples",
            help="Calibration samples (images or sequences); default: up to 256. A warning "
            "says when the data holds fewer than asked.",
        ),
    ]
    MethodOpt = Annotated[
        str, typer.Option("--method", "-m", help="Calibration: minmax, percentile or mse.")
    ]
    QatEpochsOpt = Annotated[
        int,
        typer.Option("--qat-epochs", help="Quantization-aware fine-tuning epochs after PTQ."),
    ]
    MaxDropOpt = Annotated[
        float,
        typer.Option(
            "--max-drop",
            help="Largest loss of the INT8 export against float: top-1 points, or percent "
            "perplexity for language models. Above it, exit 1.",
        ),
    ]
    ScanInputsOpt = Annotated[
        bool,
        typer.Option(
            "--quantize-scan-inputs", help="Also quantize the q/k/v projections feeding scans."
        ),
    ]
    ThreadsOpt = Annotated[int, typer.Option("--threads", min=1, help="Intra-op threads.")]
    OutputDirOpt = Annotated[Path, typer.Option("--output", "-o", help="Output folder.")]

    def _version(value: bool) -> None:
        if value:
            out.print(f"edgegate {__version__}")
            raise typer.Exit()

    @app.callback()
    def _root(
        version: Annotated[
            bool,
            typer.Option(
                "--version", callback=_version, is_eager=True, help="Print the version and exit."
            ),
        ] = False,
        debug: Annotated[
            bool, typer.Option("--debug", help="Show tracebacks on errors (also after a command).")
        ] = False,
    ) -> None:
        """Global options; `--debug` is read by main() wherever it appears."""

    @app.command()
    def models(
        json_out: JsonOpt = False,
        recognised: Annotated[
            bool,
            typer.Option(
                "--recognised",
                help="List the block families edgegate recognises in any model instead.",
            ),
        ] = False,
    ) -> None:
        """List the model zoo with parameter counts and MACs at each model's default input.

        Commands also take `timm:NAME` and `torchvision:NAME` image classifiers (the `[vision]`
        extra), `hf:FOLDER_OR_ID` causal LMs (the `[hf]` extra), a `module:factory` (with
        --trust-code), a `.pt2` or a checkpoint. `--recognised` lists the blocks edgegate finds
        in any of them (gated recurrences become edgegate ops; gates get fixed-range INT8).

        Examples: `edgegate models --json`; `edgegate models --recognised`
        """
        if recognised:
            _print_recognised(json_out)
            return
        from edgegate.pipeline.zoo import model_table

        rows = model_table()
        if json_out:
            _emit_json(rows)
            return
        table = Table(
            title="edgegate model zoo",
            caption=escape(
                "MACs at the default input; --json for more. MODEL may also be timm:NAME or "
                "torchvision:NAME ([vision] extra), hf:FOLDER_OR_ID ([hf] extra), "
                "module:factory, a .pt2 or a .pt; --recognised lists the blocks found in them"
            ),
        )
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
    def targets(json_out: JsonOpt = False) -> None:
        """List the deployment targets, what each needs, and whether this machine has it.

        Example: `edgegate targets --json`
        """
        from edgegate.targets import all_targets

        rows = [
            {
                "name": t.name,
                "summary": t.summary,
                "default_profile": t.default_profile,
                "available": not t.missing(),
                "missing": t.missing(),
                "install": t.install_hint,
            }
            for t in all_targets().values()
        ]
        if json_out:
            _emit_json(rows)
            return
        table = Table(title="edgegate targets")
        for col in ("target", "what it writes", "here"):
            table.add_column(col)
        for r in rows:
            here = (
                "ready" if r["available"] else f"missing {', '.join(r['missing'])}: {r['install']}"
            )
            table.add_row(r["name"], escape(r["summary"]), escape(here))
        out.print(table)

    @app.command()
    def train(
        model: ModelArg,
        output: Annotated[
            Path, typer.Option("--output", "-o", help="Where to write the checkpoint.")
        ],
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
        model = _model_spec(model, num_classes, pretrained, revision)
        from edgegate.pipeline.zoo import train as run_train
        from edgegate.train import TrainConfig

        config = TrainConfig(
            epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, max_steps_per_epoch=max_steps
        )
        with _progress() as progress:
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
                command=_command_line(),
                half=half,
                progress=progress,
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
        model = _model_spec(model, num_classes, pretrained, revision)
        from edgegate.pipeline.zoo import evaluate as run_evaluate

        with _progress() as progress:
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
            _emit_json(result)
            return
        out.print(f"[bold]{result['spec']}[/] on {result['data']} ({result['split']} split)")
        _print_metrics(result["metrics"])

    @app.command()
    def export(
        model: ModelArg,
        target: TargetOpt = "onnx",
        output: OutputDirOpt = Path("edgegate-out"),
        precision: Annotated[
            str | None,
            typer.Option(
                "--precision",
                help="fp32 or fp16, where the target takes it (tensorrt: fp32 default; coreml: "
                "fp16 default, scans kept fp32).",
            ),
        ] = None,
        int8: Annotated[
            bool,
            typer.Option(
                "--int8",
                help="Quantize under the target's INT8 profile (explicit Q/DQ), with the "
                "calibration options below; judged as `quantize` judges.",
            ),
        ] = False,
        build: Annotated[
            bool,
            typer.Option(
                "--build",
                help="Also build the engine here (TensorRT and a GPU needed; else exit 3).",
            ),
        ] = False,
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
        w8a8: Annotated[
            bool,
            typer.Option(
                "--w8a8",
                help="With --int8 under a weight-only profile (coreml): quantize activations "
                "too, calibrated on --calib-data; gates keep their fixed [0, 1] ranges.",
            ),
        ] = False,
        data: Annotated[
            str | None,
            typer.Option("--data", help="With --int8: the test data the export is judged on."),
        ] = None,
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
        - `edgegate export mobilenet-v3-se --target tensorrt --int8 --calib-samples 128 -o kit/m8`
        - `edgegate export gla-lm --target coreml -o out/gla` (fp16, scans fp32; flexible length)
        - `edgegate export mobilenet-v3-se --target coreml --int8 -o out/m8` (int8 weights)
        - `edgegate export mypkg.models:build -c mine.pt --trust-code --task image -o out/mine`
        - `edgegate export torchvision:mobilenet_v3_small --num-classes 10 -o out/tv`
        """
        model = _model_spec(model, num_classes, pretrained, revision)
        from edgegate.errors import BadInput

        if w8a8 and not int8:
            raise BadInput(
                "--w8a8 quantizes activations, which needs calibration data: add --int8 "
                "(with --calib-data SRC and --calib-samples N)"
            )
        if int8:
            if precision is not None:
                raise BadInput(
                    "--int8 and --precision exclude each other: the target's INT8 profile "
                    "decides the float precision around the int8 weights"
                )
            from edgegate.pipeline.quantize import quantize_for_target
            from edgegate.pipeline.summary import int8_rows

            with _progress() as progress:
                result = quantize_for_target(
                    model,
                    output,
                    target=target,
                    build=build,
                    method=method,
                    checkpoint=checkpoint,
                    calib_data=calib_data,
                    calib_samples=calib_samples,
                    qat_epochs=qat_epochs,
                    input_size=input_size,
                    seq_len=seq_len,
                    quantize_scan_inputs=quantize_scan_inputs,
                    w8a8=w8a8,
                    max_drop=max_drop,
                    data=data,
                    trust_code=trust_code,
                    task=task,
                    progress=progress,
                )
            _warn(result)
            if json_out:
                _emit_json(result)
            else:
                _print_rows(int8_rows(result), title=f"INT8 {result['model']} for {target}")
                out.print(f"files in {result['output_dir']}: {', '.join(result['files'])}")
            if not result["passed"]:
                _fail(result, "INT8 check")
            return
        from edgegate.pipeline.export import export as run_export
        from edgegate.pipeline.recurrences import recurrence_lines

        with _progress() as progress:
            result = run_export(
                model,
                output,
                target=target,
                precision=precision,
                build=build,
                checkpoint=checkpoint,
                input_size=input_size,
                seq_len=seq_len,
                trust_code=trust_code,
                task=task,
                progress=progress,
            )
        _warn(result)
        if json_out:
            _emit_json(result)
            return
        out.print(f"[bold green]exported[/] {result['model']} -> {result['output_dir']}")
        for line in recurrence_lines(result.get("recurrences", {})):
            out.print(line, highlight=False)
        for stem, record in result["ranges"].items():
            out.print(f"{stem}: {describe_ranges(record)}", highlight=False)
        out.print(
            f"files: {', '.join(result['files'])}; custom ops: {result['custom_ops'] or 'none'}"
        )
        out.print(f"weights: {result['weights']}")

    @app.command()
    def quantize(
        model: ModelArg,
        profile: ProfileOpt = "onnxruntime",
        output: OutputDirOpt = Path("edgegate-int8"),
        checkpoint: CheckpointOpt = None,
        num_classes: NumClassesOpt = None,
        pretrained: PretrainedOpt = False,
        revision: RevisionOpt = None,
        calib_data: CalibDataOpt = None,
        calib_samples: CalibSamplesOpt = None,
        method: MethodOpt = "minmax",
        qat_epochs: QatEpochsOpt = 0,
        max_drop: MaxDropOpt = 1.0,
        data: DataOpt = None,
        input_size: InputSizeOpt = None,
        seq_len: SeqLenOpt = None,
        quantize_scan_inputs: ScanInputsOpt = False,
        w8a8: Annotated[
            bool,
            typer.Option("--w8a8", help="Quantize activations too under weight-only profiles."),
        ] = False,
        report: Annotated[
            bool,
            typer.Option("--report", help="Per-layer quantizability report (JSON, Markdown, PNG)."),
        ] = False,
        streaming: Annotated[
            bool,
            typer.Option(
                "--streaming",
                help="Scan LMs and hf: LMs (their cache as states): export the streaming "
                "step (tokens, state0.. -> logits, new_state0..), calibrated over whole "
                "sequences, state carried.",
            ),
        ] = False,
        quantize_state: Annotated[
            bool,
            typer.Option(
                "--quantize-state",
                help="With --streaming: quantize the state inputs too (default float), their "
                "range calibrated on states reached mid-sequence.",
            ),
        ] = False,
        timestep_report: Annotated[
            bool,
            typer.Option(
                "--timestep-report",
                help="LMs: logit SNR and top-1 agreement per position, float vs the INT8 export "
                "(timestep_report.json/.png; per-quarter error and growth in report.json).",
            ),
        ] = False,
        trust_code: TrustOpt = False,
        task: TaskOpt = None,
        json_out: JsonOpt = False,
    ) -> None:
        """INT8 post-training quantization (brevitas), optional QAT, and a Q/DQ export that is
        judged before it ships: exit 1 when it strays from its fake-quant model or loses more
        than --max-drop against float (the files stay, for inspection).

        Writes model.int8.pt (fake-quant state), model.int8.onnx, manifest.json and report.json.

        Examples:

        - `edgegate quantize mobilenet-v3-se -o out/int8`
        - `edgegate quantize gc-mobilenet --profile onnxruntime:arm64 -o out/gc-arm`
        - `edgegate quantize gc-mobilenet --profile tensorrt --method percentile --report`
        - `edgegate quantize qvit:attention=clipped --qat-epochs 2 --calib-data imgs/ -o out/q`
        - `edgegate quantize gla-lm --streaming --seq-len 512 --timestep-report -o out/gla8`
        - `edgegate quantize timm:mobilenetv3_large_100 -c mnv3.pt -o out/t8`
        """
        model = _model_spec(model, num_classes, pretrained, revision)
        from edgegate.pipeline.quantize import quantize as run_quantize
        from edgegate.pipeline.summary import int8_rows

        with _progress() as progress:
            result = run_quantize(
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
                max_drop=max_drop,
                report=report,
                streaming=streaming,
                quantize_state=quantize_state,
                timestep_report=timestep_report,
                trust_code=trust_code,
                task=task,
                progress=progress,
            )
        _warn(result)
        if json_out:
            _emit_json(result)
        else:
            _print_rows(int8_rows(result), title=f"INT8 {result['model']}")
            out.print(f"files in {result['output_dir']}: {', '.join(result['files'])}")
        if not result["passed"]:
            _fail(result, "INT8 check")

    @app.command()
    def validate(
        artifact: Annotated[Path, typer.Argument(help="Export folder or a model file.")],
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
        junit: Annotated[
            Path | None,
            typer.Option("--junit", help="Write a JUnit XML report (also on bad input)."),
        ] = None,
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

        with _progress() as progress:
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
        _warn(result)
        if json_out:
            _emit_json(result)
        else:
            _print_rows(validation_rows(result))
        if not result["passed"]:
            raise typer.Exit(1)

    @app.command()
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

        with _progress() as progress:
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
            _emit_json(result)
            return
        _print_rows(
            [
                ("bundle", result["bundle"]),
                ("target / runtime", f"{result['target']} / {result['runtime']}"),
                ("samples", f"{result['samples']} of {result['data']} ({result['precision']})"),
                ("on the device", f"cd {result['bundle']} && {result['run']}"),
                ("then here", f"edgegate judge {result['bundle']}"),
            ]
        )

    @app.command()
    def judge(
        bundle_dir: Annotated[Path, typer.Argument(help="Bundle folder holding results.json.")],
        results: Annotated[
            Path | None,
            typer.Option("--results", help="The device's results.json (default: in the bundle)."),
        ] = None,
        junit: Annotated[
            Path | None,
            typer.Option("--junit", help="Write a JUnit XML report (also on bad input)."),
        ] = None,
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
        _warn(result)
        if json_out:
            _emit_json(result)
        else:
            _print_rows(judge_rows(result))
        if not result["passed"]:
            raise typer.Exit(1)

    @app.command()
    def bench(
        artifact: Annotated[Path, typer.Argument(help="Export folder or a model file.")],
        runs: Annotated[int, typer.Option(min=1, help="Timed runs after warm-up.")] = 50,
        warmup: Annotated[int, typer.Option(min=0)] = 5,
        threads: ThreadsOpt = 2,
        batch: Annotated[int, typer.Option(min=1)] = 1,
        positive_rate: Annotated[
            float,
            typer.Option(min=0.0, max=1.0, help="Share of positives in the GC two-stage stream."),
        ] = 0.10,
        stage1_threads: Annotated[
            int,
            typer.Option(
                "--stage1-threads",
                min=1,
                help="Threads of the GC always-on stage 1 (stage 2 gets --threads).",
            ),
        ] = 1,
        plot: Annotated[
            Path | None, typer.Option("--plot", help="Write a PNG latency plot.")
        ] = None,
        json_out: JsonOpt = False,
    ) -> None:
        """Latency (p50/p90/p99/mean), throughput and peak memory of an export on its target.

        Examples:

        - `edgegate bench out/gc --runs 200 --plot latency.png`
        - `edgegate bench out/qlm --threads 1 --batch 4 --json`
        """
        from edgegate.pipeline.bench import bench as run_bench
        from edgegate.pipeline.summary import bench_rows

        with _progress() as progress:
            result = run_bench(
                artifact,
                runs=runs,
                warmup=warmup,
                threads=threads,
                batch=batch,
                positive_rate=positive_rate,
                stage1_threads=stage1_threads,
                plot=plot,
                progress=progress,
            )
        _warn(result)
        if json_out:
            _emit_json(result)
            return
        _print_rows(bench_rows(result))

    @app.command()
    def deploy(
        model: Annotated[
            str,
            typer.Argument(
                help="Any MODEL form `export` takes (default: gc-mobilenet with shipped weights)."
            ),
        ] = "gc-mobilenet",
        target: TargetOpt = "onnxruntime",
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
        profile: ProfileOpt = "onnxruntime",
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
        model = _model_spec(model, num_classes, pretrained, revision)
        from edgegate.pipeline.deploy import deploy as run_deploy
        from edgegate.pipeline.summary import summary_sections

        with _progress() as progress:
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
            _warn(block)
        if json_out:
            _emit_json(summary)
        else:
            for title, rows in summary_sections(summary):
                _print_rows(rows, title=title)
            out.print(f"reports: {output / 'report.md'}, {output / 'report.json'}")
        if not summary["passed"]:
            raise typer.Exit(1)


def _usage_line(exc: Exception) -> str:
    message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    command = getattr(getattr(exc, "ctx", None), "command_path", "edgegate")
    return f"{message.strip()} (see `{command} --help`)"


def main(argv: list[str] | None = None) -> int:
    """Console-script entry: map EdgegateError to its exit code and one line.

    Usage errors (unknown option, bad choice) are one line too, with exit code 2.
    """
    from typer._click.exceptions import ClickException, NoArgsIsHelpError

    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    _invocation[:] = args
    try:
        code = build_app()(args=args, prog_name="edgegate", standalone_mode=False)
    except NoArgsIsHelpError as exc:
        err.print(exc.format_message(), highlight=False, markup=False)
        return EXIT_BAD_INPUT
    except ClickException as exc:
        if debug:
            raise
        err.print(
            f"[bold red]error:[/] {escape(_usage_line(exc))}", highlight=False, soft_wrap=True
        )
        return exc.exit_code
    except EdgegateError as exc:
        if debug:
            raise
        # escaped: a message may hold brackets (an install hint's extra, a shape) that rich
        # would otherwise read as markup and drop
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except Exception as exc:  # a bug in edgegate: still one line unless --debug
        if debug:
            raise
        err.print(
            f"[bold red]internal error:[/] {type(exc).__name__}: {escape(str(exc))} "
            "(rerun with --debug)",
            highlight=False,
            soft_wrap=True,
        )
        return EXIT_INTERNAL_ERROR
    return code if isinstance(code, int) else 0


def console_main() -> None:
    sys.exit(main())
