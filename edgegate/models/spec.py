"""The zoo table and model spec strings: `name[:key=value[,key=value...]]`.

Option types come from each factory's signature (annotation, else the default's type), so
adding an option to a factory makes it selectable from the CLI with no registry change.
`canonical_spec` sorts options and drops defaults: one model, one identity string (used
for checkpoint records and shipped-weight file names).
"""

from __future__ import annotations

import inspect
import math
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn

from edgegate.errors import BadInput
from edgegate.models.gc_mobilenet import gc_mobilenet
from edgegate.models.lm import gdn_lm, gla_lm, gla_lm_25m, hgrn_lm, qlm
from edgegate.models.mobilenet_v3 import mobilenet_v3_large_se, mobilenet_v3_se
from edgegate.models.vit import qvit

Task = Literal["image", "gc", "lm"]
TASKS: tuple[str, ...] = ("image", "gc", "lm")


@dataclass(frozen=True)
class ModelInfo:
    """One zoo entry. `options` maps each spec option to its default.

    `fixed_input`: images must be exactly default size (ViT position embeddings), or token
    sequences at most the default length (learned positions); False = any size.
    `min_input`: the smallest image side that is not degenerate (a CNN's total stride: below
    it, the deepest stride-2 stages see a 1x1 map that is mostly padding).
    `train_command`: for an entry too large to ship weights for, the documented command that
    trains it (what `edgegate models` and a weightless `evaluate` point to).
    """

    name: str
    factory: Callable[..., nn.Module]
    task: str
    description: str
    default_input: tuple[int, ...]
    options: dict[str, Any] = field(default_factory=dict)
    fixed_input: bool = False
    min_input: int = 1
    train_command: str = ""

    @property
    def takes_tokens(self) -> bool:
        """Token sequences ([T]) rather than images ([C, H, W])."""
        return len(self.default_input) == 1


def _options(factory: Callable[..., nn.Module]) -> dict[str, Any]:
    return {
        name: p.default
        for name, p in inspect.signature(factory).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def _info(
    name: str,
    factory: Callable[..., nn.Module],
    task: str,
    description: str,
    default_input: tuple[int, ...],
    fixed_input: bool = False,
    min_input: int = 1,
    train_command: str = "",
) -> ModelInfo:
    return ModelInfo(
        name,
        factory,
        task,
        description,
        default_input,
        _options(factory),
        fixed_input,
        min_input,
        train_command,
    )


MOBILENET_STRIDE = 32
# A brief run on the built-in stdlib bytes (README "Model zoo" gives its time on 2 cores).
GLA_LM_25M_TRAIN = (
    "edgegate train gla-lm-25m --data stdlib --epochs 1 --max-steps 300 --batch-size 16 "
    "--lr 1e-3 -o gla-lm-25m.pt"
)


_ZOO: dict[str, ModelInfo] = {
    info.name: info
    for info in (
        _info(
            "mobilenet-v3-se",
            mobilenet_v3_se,
            "image",
            "MobileNetV3-Small, hard-sigmoid SE gates",
            (3, 32, 32),
            min_input=MOBILENET_STRIDE,
        ),
        _info(
            "gc-mobilenet",
            gc_mobilenet,
            "gc",
            "MobileNetV3 + gated compression, 2 stages",
            (3, 32, 32),
            min_input=MOBILENET_STRIDE,
        ),
        _info(
            "mobilenet-v3-large-se",
            mobilenet_v3_large_se,
            "image",
            "MobileNetV3-Large, hard-sigmoid SE gates (full size)",
            (3, 32, 32),
            min_input=MOBILENET_STRIDE,
        ),
        _info(
            "qvit",
            qvit,
            "image",
            "small ViT, softmax/clipped/gated attention",
            (3, 16, 16),
            fixed_input=True,
        ),
        _info(
            "qlm",
            qlm,
            "lm",
            "byte LM, softmax/clipped/gated attention",
            (128,),
            fixed_input=True,
        ),
        _info("gla-lm", gla_lm, "lm", "byte LM, gated linear attention (GLA)", (128,)),
        _info(
            "gla-lm-25m",
            gla_lm_25m,
            "lm",
            "byte LM, GLA at 25.6 M params (no shipped weights: train it)",
            (128,),
            train_command=GLA_LM_25M_TRAIN,
        ),
        _info("hgrn-lm", hgrn_lm, "lm", "byte LM, HGRN gated linear scan", (128,)),
        _info("gdn-lm", gdn_lm, "lm", "byte LM, Gated DeltaNet (delta rule)", (128,)),
    )
}


def list_models() -> list[ModelInfo]:
    """Every zoo model, in a stable order."""
    return list(_ZOO.values())


def _key(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def is_zoo_name(name: str) -> bool:
    """Whether ``name`` (without options) names a zoo model."""
    return _key(name) in _ZOO


def get_info(name: str) -> ModelInfo:
    """The zoo entry for a bare model name; BadInput listing the known names otherwise."""
    key = _key(name)
    if key not in _ZOO:
        raise BadInput(f"unknown model '{name}' (known: {', '.join(_ZOO)})")
    return _ZOO[key]


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _option_type(info: ModelInfo, key: str) -> Any:
    hints = typing.get_type_hints(info.factory)
    return hints.get(key, type(info.options[key]))


def _convert(spec: str, key: str, text: str, kind: Any) -> Any:
    """Parse one option value by its declared type; BadInput naming the spec and option."""

    def bad(expected: str) -> BadInput:
        return BadInput(f"model spec '{spec}': bad value '{text}' for option '{key}' ({expected})")

    if typing.get_origin(kind) is Literal:
        choices = typing.get_args(kind)
        if text not in choices:
            raise bad("expected one of: " + ", ".join(map(str, choices)))
        return text
    if kind is bool:
        low = text.lower()
        if low not in _TRUE | _FALSE:
            raise bad("expected true or false")
        return low in _TRUE
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise bad("expected an integer") from None
    if kind is float:
        try:
            value = float(text)
        except ValueError:
            raise bad("expected a number") from None
        if not math.isfinite(value):
            raise bad("expected a finite number")
        return value
    if not text:
        raise bad("expected a non-empty string")
    return text


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """'qlm:attention=clipped,depth=3' -> ('qlm', {'attention': 'clipped', 'depth': 3})."""
    if not isinstance(spec, str) or not spec.strip():
        raise BadInput("model spec is empty (expected name[:key=value,...])")
    name, sep, rest = spec.strip().partition(":")
    info = get_info(name)
    options: dict[str, Any] = {}
    if not sep:
        return info.name, options
    if not rest.strip():
        raise BadInput(f"model spec '{spec}': nothing after ':' (expected key=value,...)")
    for item in rest.split(","):
        key, eq, text = (part.strip() for part in item.partition("="))
        if not eq or not key:
            raise BadInput(
                f"model spec '{spec}': malformed option '{item.strip()}' (expected key=value)"
            )
        if key not in info.options:
            known = ", ".join(info.options)
            raise BadInput(f"model spec '{spec}': unknown option '{key}' (known: {known})")
        if key in options:
            raise BadInput(f"model spec '{spec}': option '{key}' given twice")
        options[key] = _convert(spec, key, text, _option_type(info, key))
    return info.name, options


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def canonical_spec(spec: str) -> str:
    """Stable identity of a spec: lower-case name, options sorted, defaults dropped."""
    name, options = parse_spec(spec)
    defaults = _ZOO[name].options
    kept = sorted((k, v) for k, v in options.items() if v != defaults[k])
    if not kept:
        return name
    return name + ":" + ",".join(f"{k}={_format(v)}" for k, v in kept)


# Options whose meaning needs them positive, or within a range, in every zoo model.
_AT_LEAST_ONE = ("depth", "dim", "heads", "last_channel", "seq_len", "image_size", "patch",
                 "gate_rank")  # fmt: skip
_POSITIVE = ("width", "mlp_ratio")
_IN_CHANNELS = (1, 3)  # what the image loaders produce


def check_options(spec: str, options: dict[str, Any]) -> None:
    """BadInput for a degenerate model (``depth=0``, ``width=-1``...): one line, no traceback."""

    def bad(message: str) -> BadInput:
        return BadInput(f"model spec '{spec}': {message}")

    for key in _AT_LEAST_ONE:
        if key in options and options[key] < 1:
            raise bad(f"{key} must be at least 1, got {options[key]}")
    for key in _POSITIVE:
        if key in options and not options[key] > 0:
            raise bad(f"{key} must be positive, got {options[key]}")
    if "num_classes" in options and options["num_classes"] < 2:
        raise bad(f"num_classes must be at least 2, got {options['num_classes']}")
    if "in_channels" in options and options["in_channels"] not in _IN_CHANNELS:
        raise bad(f"in_channels must be 1 or 3, got {options['in_channels']}")
    if "dropout" in options and not 0.0 <= options["dropout"] < 1.0:
        raise bad(f"dropout must lie in [0, 1), got {options['dropout']}")
    if "threshold" in options and not 0.0 < options["threshold"] < 1.0:
        raise bad(f"threshold must lie in (0, 1), got {options['threshold']}")


def build_model(spec: str) -> nn.Module:
    """A freshly initialised zoo model (train mode, as constructed)."""
    name, options = parse_spec(spec)
    check_options(spec, {**_ZOO[name].options, **options})
    try:
        return _ZOO[name].factory(**options)
    except (ValueError, TypeError) as err:
        raise BadInput(f"model spec '{spec}': {err}") from err
