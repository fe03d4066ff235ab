"""`quantize --equalize` and `--weight-granularity`: refused before any work where the target
cannot use them, and reported after calibration (the record ``quant.graph`` leaves on the
fake-quant model)."""

from __future__ import annotations

from typing import Any

from torch import nn

from edgegate.errors import BadInput
from edgegate.targets import Target


def check_equalize_options(target: Target, equalize: bool, granularity: str | None) -> None:
    """BadInput when the target's INT8 path cannot take the options (a toolchain that
    quantizes by itself; a file that holds one weight granularity only)."""
    if equalize and target.int8_toolchain:
        raise BadInput(
            f"--equalize does not apply: target '{target.name}' quantizes with its own "
            f"toolchain ({target.int8_toolchain}), which takes the float model as it is"
        )
    if granularity is not None and granularity not in target.weight_granularities:
        held = " or ".join(target.weight_granularities)
        raise BadInput(
            f"--weight-granularity {granularity} does not apply to target '{target.name}': "
            f"its INT8 weights have one scale per {held}"
        )


def equalization_result(qmodel: nn.Module, spec: str) -> tuple[dict[str, Any] | None, list[str]]:
    """report.json's ``equalization`` (None when not asked for) and the warnings to print:
    nothing to equalize in the model, or an equalization undone by its function check."""
    record = getattr(qmodel, "equalization", None)
    if record is None:
        return None, []
    warnings = []
    if record.reverted:
        warnings.append(f"--equalize: {record.reverted}")
    elif not record.regions:
        warnings.append(
            f"--equalize: no layer pair of '{spec}' can be equalized exactly (none joined by "
            "identity or ReLU alone); quantized without it"
        )
    return {**record.to_dict(), "line": record.line()}, warnings
