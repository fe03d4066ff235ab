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
