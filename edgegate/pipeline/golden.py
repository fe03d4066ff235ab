"""Golden cases: the real inputs a target stores to check its file on the device.

A build kit judges its engine there against PyTorch's outputs on these inputs, so they must
say something: real samples from the task's data (one random sample decides nothing: its top-1
agreement is 0 or 100 %, and INT8's tolerance would be judged on noise), more than one row per
call and, for language models, two lengths (the engine's dynamic ranges are exercised), and the
same every export (same model and options -> the same files, the same hashes). So the rows are
drawn with a fixed seed from the test split, and a length or batch the export does not declare
is never used.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from edgegate.dims import BATCH
from edgegate.errors import BadInput
from edgegate.models import LoadedModel
from edgegate.pipeline.tasks import LanguageModelTask, Task
from edgegate.targets import ExportPart

GOLDEN_SEED = 0
GOLDEN_IMAGES = 8  # images per export: top-1 agreement in steps of 12.5 %, not 0 or 100
GOLDEN_SEQUENCES = 2  # sequences per length; each holds a decision per token

# rows of model inputs -> {stem: that part's args} (a GC model's stage 2 takes features)
MakeArgs = Callable[[torch.Tensor], dict[str, tuple[torch.Tensor, ...]]]


def pick_rows(count: int, wanted: int, seed: int = GOLDEN_SEED) -> list[int]:
    """``wanted`` distinct row indices of ``count``, drawn with ``seed``, in ascending order."""
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(count, size=min(wanted, count), replace=False))


def _range(part: ExportPart, name: str):
    return next((r for r in part.ranges if r.index == 0 and r.name == name), None)


def batch_size(part: ExportPart, wanted: int) -> int:
    """The rows one golden call carries: ``wanted``, within the part's declared batch (its
    fixed batch where it has no range)."""
    declared = _range(part, BATCH)
    if declared is not None:
        return max(declared.low, min(wanted, declared.high))
    return int(part.args[0].shape[0]) if part.args and part.args[0].dim() else 1


def golden_lengths(part: ExportPart) -> list[int]:
    """The sequence lengths of an LM's golden cases: the traced one and half of it, clamped
    into the declared range (only the traced one when the length is fixed)."""
    traced = int(part.args[0].shape[1])
    declared = next((r for r in part.ranges if r.index == 0 and r.axis == 1 and not r.fixed), None)
    if declared is None:
        return [traced]
    shorter = max(declared.low, min(traced // 2, declared.high))
    return [traced] if shorter == traced else [traced, shorter]


def export_golden(
    kind: Task,
    loaded: LoadedModel,
    module: nn.Module,
    metadata: dict[str, str],
    parts: list[ExportPart],
    *,
    input_size: int | None,
    seq_len: int | None,
) -> list[ExportPart]:
    """``golden_cases`` of an export's parts, from the task's built-in test split at the
    export's geometry (what ``validate`` reads when given no --data)."""
    data = kind.load(loaded, None, "test", input_size=input_size, seq_len=seq_len)

    def make_args(rows: torch.Tensor) -> dict[str, tuple[torch.Tensor, ...]]:
        return {p.stem: p.args for p in kind.export_parts(module, (rows,), metadata)}

    return golden_cases(kind, kind.model_inputs(data), parts, make_args)


def golden_cases(
    kind: Task, rows: torch.Tensor, parts: list[ExportPart], make_args: MakeArgs
) -> list[ExportPart]:
    """``parts`` with their ``samples``: cases cut from the task's ``rows`` (model inputs of
    the test split), at the batch each part declares; LMs at two lengths."""
    if len(rows) == 0:
        raise BadInput("the task's data holds no rows for the golden cases")
    first = parts[0]
    if isinstance(kind, LanguageModelTask):
        lengths = golden_lengths(first)
        chosen = rows[pick_rows(len(rows), GOLDEN_SEQUENCES * len(lengths))]
        batch = batch_size(first, GOLDEN_SEQUENCES)
        groups = [
            chosen[i * GOLDEN_SEQUENCES : (i + 1) * GOLDEN_SEQUENCES, :length]
            for i, length in enumerate(lengths)
        ]
    else:
        chosen = rows[pick_rows(len(rows), GOLDEN_IMAGES)]
        batch = batch_size(first, GOLDEN_IMAGES)
        groups = [chosen]
    calls = [group[i : i + batch] for group in groups for i in range(0, len(group), batch)]
    per_stem: dict[str, list[tuple[torch.Tensor, ...]]] = {p.stem: [] for p in parts}
    for call in calls:
        with torch.no_grad():
            args = make_args(call.contiguous())
        for part in parts:
            per_stem[part.stem].append(_like(args[part.stem], part.args))
    return [dataclasses.replace(p, samples=tuple(per_stem[p.stem])) for p in parts]


def _like(args: tuple[torch.Tensor, ...], example: tuple[torch.Tensor, ...]):
    """``args`` in the example's dtypes (an fp16 part's half inputs; the graph's token type)."""
    return tuple(a.detach().to(e.dtype) for a, e in zip(args, example, strict=True))
