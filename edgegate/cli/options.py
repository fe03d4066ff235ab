"""The options several commands share, defined once: their flags, help and bounds.

A command names ``CheckpointOpt`` (and so on) as its parameter's type, so every command that
takes `--checkpoint` spells, documents and checks it the same way. `--target` and
`--profile` list a registry's names, read when the app is built (``Choices``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

ModelArg = Annotated[
    str,
    typer.Argument(
        help="Zoo name with options (`qvit:attention=gated`), `timm:NAME` or "
        "`torchvision:NAME` (an image classifier; needs the `[vision]` extra), "
        "`module:factory` (with --trust-code), a `.pt2` file, or a checkpoint (.pt) that "
        "records its model."
    ),
]
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
ArtifactArg = Annotated[Path, typer.Argument(help="Export folder or a model file.")]
JunitOpt = Annotated[
    Path | None,
    typer.Option("--junit", help="Write a JUnit XML report (also on bad input)."),
]


class Choice:
    """A ``--target`` / ``--profile`` value: one of a registry's names, checked by the
    registry's own function."""

    def __init__(self, names: list[str], check: Callable[[str], str]) -> None:
        self.names, self.check = names, check

    @property
    def metavar(self) -> str:
        return "[" + "|".join(self.names) + "]"


@dataclass(frozen=True)
class Choices:
    """The option types whose choices come from the registries: built per app, so the help
    and the parse-time check list the registries' current names."""

    target: Any  # Annotated[str, --target]
    profile: Any  # Annotated[str, --profile]

    @classmethod
    def of(cls, targets: Choice, profiles: Choice) -> Choices:
        # A choice is checked against its registry while the command line is parsed, so a
        # wrong one fails before any work, with the same one line the library gives
        # ("unknown target 'x': expected one of ..."); the help lists the registry's names.
        target = Annotated[
            str,
            typer.Option(
                "--target",
                "-t",
                parser=targets.check,
                metavar=targets.metavar,
                help="Deployment target (`edgegate targets` lists what each needs).",
            ),
        ]
        profile = Annotated[
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
        return cls(target, profile)


def model_spec(
    model: str, num_classes: int | None, pretrained: bool, revision: str | None = None
) -> str:
    """The MODEL argument with --num-classes / --pretrained (timm:/torchvision:) and
    --revision (hf: hub ids) folded in."""
    from edgegate.models import with_vision_options
    from edgegate.models.hf import with_revision

    spec = with_revision(model, revision)
    return with_vision_options(spec, num_classes=num_classes, pretrained=pretrained)
