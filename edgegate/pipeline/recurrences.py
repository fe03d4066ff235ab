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


# The program a model is captured as when FX cannot trace it: batch and lengths stay symbols.
PROGRAM_MAX_BATCH = 256
PROGRAM_MAX_LENGTH = 8192


def _program_dim(label: str) -> tuple[int, int]:
    """The range a captured program takes for a dim named ``label`` (``edgegate.dims``)."""
    from edgegate.dims import BATCH, PAST

    bounds = {BATCH: (1, PROGRAM_MAX_BATCH), "seq_len": (1, PROGRAM_MAX_LENGTH)}
    bounds[PAST] = (0, PROGRAM_MAX_LENGTH)  # a KV cache: empty at a stream's first call
    return bounds.get(label, (1, 4096))


def graph_ready(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    dynamic_dims: list[tuple[int, ...]],
    names: list[str],
) -> nn.Module:
    """``module`` if FX can trace it; otherwise its ``torch.export`` program (as a loaded
    `.pt2` is), which graph-mode quantization rewrites into a plain graph. transformers'
    models branch on tensor sizes, which FX refuses and torch.export keeps symbolic.

    ``args`` are one example per input (``names``); ``dynamic_dims`` the dims of each that
    vary (a streaming step: tokens' batch and length, every state's batch, a KV cache's
    length), named and bounded as ``edgegate.dims`` names them, one symbol per name."""
    from torch.export import Dim

    from edgegate.dims import dim_name, shapes_for_signature
    from edgegate.errors import BadInput, first_line
    from edgegate.models.checkpoint import ExportedModule, program_max_batch
    from edgegate.quant.graph import trace

    try:
        trace(module)
        return module
    except BadInput:
        pass
    symbols: dict[str, Any] = {}

    def symbol(label: str) -> Any:
        if label not in symbols:
            low, high = _program_dim(label)
            symbols[label] = Dim(label, min=low, max=high)
        return symbols[label]

    shapes = [
        {d: symbol(dim_name(n, a.dim(), a.is_floating_point(), d)) for d in dims}
        for n, a, dims in zip(names, args, dynamic_dims, strict=True)
    ]
    if args[0].shape[0] < 2:  # a size-1 example dim would be specialised to the constant 1
        args = tuple(torch.cat([a, a]) for a in args)
    try:
        program = torch.export.export(
            module,
            tuple(args),
            dynamic_shapes=shapes_for_signature(module.forward, shapes),
            strict=False,
        )
    except Exception as err:
        first = first_line(err)
        raise BadInput(
            f"cannot capture {type(module).__name__} for graph-mode quantization: FX cannot "
            f"trace it and torch.export fails ({first})"
        ) from err
    return ExportedModule(program.module(), program_max_batch(program)).eval()
