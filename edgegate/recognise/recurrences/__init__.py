"""Recurrence recognisers: a library's gated recurrence becomes one edgegate scan op.

One module per family, keyed by the code a block calls (never by a model's name), registered
here in claim order. ``swap_recurrences(model, example)`` swaps every recognised block for its
edgegate form, checked on the block's own inputs, and reports what it swapped and which
recurrences stay traced code.
"""

from __future__ import annotations

from torch import nn

from edgegate.recognise.recurrences.base import (
    EdgegateForm,
    RecurrenceRecogniser,
    Swapped,
    Traced,
)
from edgegate.recognise.recurrences.gated_delta_rule import GatedDeltaNet
from edgegate.recognise.recurrences.mamba2 import Mamba2SSD
from edgegate.recognise.recurrences.rglru import Rglru
from edgegate.recognise.recurrences.swap import RecurrenceReport
from edgegate.recognise.recurrences.swap import swap_recurrences as _swap

RECURRENCE_RECOGNISERS: list[RecurrenceRecogniser] = [GatedDeltaNet(), Mamba2SSD(), Rglru()]


def swap_recurrences(model: nn.Module, example=None) -> RecurrenceReport:
    """Swap, in place, every block a registered recogniser takes (see ``swap.py``)."""
    return _swap(model, example, RECURRENCE_RECOGNISERS)


__all__ = [
    "RECURRENCE_RECOGNISERS",
    "EdgegateForm",
    "RecurrenceRecogniser",
    "RecurrenceReport",
    "Swapped",
    "Traced",
    "swap_recurrences",
]
