"""Before a model is exported or quantized: its library recurrences become edgegate ops.

The swap is checked block by block on the model's own inputs (``edgegate.recognise``); what it
swapped and which recurrences stay traced code go into the manifest, the report and the CLI's
lines, so a user sees which blocks got edgegate's scan and which did not.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edgegate.recognise.recurrences import RecurrenceReport, swap_recurrences


def prepare_recurrences(module: nn.Module, example: tuple[torch.Tensor, ...]) -> RecurrenceReport:
    """Swap ``module``'s recognised recurrences in place (checked on ``example``)."""
    return swap_recurrences(module, example)


def recurrence_lines(record: dict[str, Any]) -> list[str]:
    """One line per block for the CLI: swapped blocks, then traced ones with their reason."""
    lines = [
        f"recurrence {item['path']}: {item['family']} -> {item['op']}"
        for item in record.get("swapped", [])
    ]
    lines += [
        f"recurrence {item['path']} ({item['what']}) left as traced code: {item['reason']}"
        for item in record.get("traced", [])
    ]
    return lines


# The program a model is captured as when FX cannot trace it: batch and length stay symbols.
PROGRAM_MAX_BATCH = 256
PROGRAM_MAX_LENGTH = 8192


def graph_ready(
    module: nn.Module, example: torch.Tensor, dynamic_dims: tuple[int, ...]
) -> nn.Module:
    """``module`` if FX can trace it; otherwise its ``torch.export`` program (as a loaded
    `.pt2` is), which graph-mode quantization rewrites into a plain graph. transformers'
    models branch on tensor sizes, which FX refuses and torch.export keeps symbolic."""
    from torch.export import Dim

    from edgegate.errors import BadInput
    from edgegate.models.checkpoint import ExportedModule, program_max_batch
    from edgegate.quant.graph import trace

    try:
        trace(module)
        return module
    except BadInput:
        pass
    names = {0: ("batch", PROGRAM_MAX_BATCH), 1: ("seq_len", PROGRAM_MAX_LENGTH)}
    shapes = {
        d: Dim(names.get(d, (f"dim{d}", 0))[0], min=1, max=names.get(d, ("", 4096))[1])
        for d in dynamic_dims
    }
    if example.shape[0] < 2:  # a size-1 example dim would be specialised to the constant 1
        example = torch.cat([example, example])
    try:
        program = torch.export.export(module, (example,), dynamic_shapes=(shapes,), strict=False)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise BadInput(
            f"cannot capture {type(module).__name__} for graph-mode quantization: FX cannot "
            f"trace it and torch.export fails ({first})"
        ) from err
    return ExportedModule(program.module(), program_max_batch(program)).eval()
