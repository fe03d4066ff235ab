"""Which sizes an export declares for each dynamic dim, and the export that keeps its word.

``declared_ranges`` is the policy: batch 1 to the target's largest batch; a token sequence
from 1 token to twice the traced length; an image side (or feature map) from half the traced
size (a zoo CNN: its smallest side) to twice it; a streaming step's KV cache from empty to
twice the traced length; a `.pt2` program's batch no further than the
program takes. A target whose files are planned for their export size (ExecuTorch) stops every
dim at the traced size; a zoo model with learned positions takes no longer sequence, nor
another image side.

``export_checked`` exports a part, runs it at every point of those ranges against PyTorch
(``edgegate.validate.ranges``), and where it is refused or wrong, narrows the ranges or fixes
the dim and exports again: the manifest then records what was checked, and each fixed dim
with its reason. A graph wrong at its own traced shape is the exporter's failure (exit 1).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgegate.dims import BATCH, PAST, DimRange, FixedDim, dim_name
from edgegate.errors import ValidationFailed
from edgegate.models import LoadedModel
from edgegate.progress import SILENT, Progress
from edgegate.runtime import Runner, TorchRunner
from edgegate.targets import ExportedFile, ExportPart, Target
from edgegate.validate.parity import Tolerance
from edgegate.validate.ranges import RangeCheck, check_ranges, narrow, probes, resize

# A stream's KV cache is declared up to the model's context, at most this long: the longest
# past the range check runs (a few points, each one call of the step)
MAX_CHECKED_PAST = 1024
MAX_ATTEMPTS = 4  # export, then at most three narrowings (batch; then the other dims; recheck)


@dataclass(frozen=True)
class RangePolicy:
    """What the model allows: its smallest image side, and whether its inputs are fixed in
    size (learned positions: no longer sequence, no other image side)."""

    min_side: int | None = None
    fixed_input: bool = False
    max_batch: int | None = None  # a .pt2 program's own bound on its batch
    max_context: int | None = None  # an LM's positions (a streaming KV cache grows to it)

    @classmethod
    def of(cls, loaded: LoadedModel) -> RangePolicy:
        info = loaded.info
        max_batch = getattr(loaded.module, "max_batch", None)
        max_context = getattr(loaded.module, "max_context", None)
        if info is None:
            return cls(max_batch=max_batch, max_context=max_context)
        return cls(
            info.min_input if info.min_input > 1 else None, info.fixed_input, max_batch,
            max_context,
        )  # fmt: skip


def declared_ranges(
    part: ExportPart, target: Target, policy: RangePolicy
) -> tuple[list[DimRange], list[FixedDim]]:
    """The ranges a part's dynamic dims are exported with, and the asked dims that cannot
    vary at all (with the reason)."""
    ranges: list[DimRange] = []
    fixed: list[FixedDim] = []
    for index, (name, arg, dims) in enumerate(
        zip(part.input_names, part.args, part.dynamic_dims, strict=True)
    ):
        for axis in sorted(dims):
            label = dim_name(name, arg.dim(), arg.is_floating_point(), axis)
            traced = int(arg.shape[axis])
            low, high, why = _bounds(label, arg, traced, target, policy, name)
            if low == high:
                fixed.append(FixedDim(name, axis, label, traced, why))
            else:
                ranges.append(DimRange(name, index, axis, label, low, traced, high))
    return ranges, fixed


def _bounds(
    label: str, arg: torch.Tensor, traced: int, target: Target, policy: RangePolicy, name: str
) -> tuple[int, int, str]:
    if label == BATCH:
        high = max(target.max_batch, traced)
        if policy.max_batch is not None and policy.max_batch < high:
            return (
                1,
                policy.max_batch,
                f"the exported program takes batch {policy.max_batch} at most",
            )
        return 1, high, ""
    tokens = not arg.is_floating_point()
    bounded = target.bounded_by_export or (tokens and target.sequences_bounded_by_export)
    high = traced if bounded or policy.fixed_input else 2 * traced
    capped = (
        f"{target.name} plans its files for the export's own size"
        if bounded
        else "the model takes no larger input (learned positions)"
    )
    if tokens:  # a token sequence: down to one token
        return 1, high, capped
    if label == PAST:  # a KV cache: from empty (a fresh stream) to the context checked
        longest = min(policy.max_context or high, MAX_CHECKED_PAST)
        return 0, max(high, longest), capped
    if policy.fixed_input and name == "images":
        return traced, traced, "the model takes one image size (learned position embeddings)"
    smallest = max(1, traced // 2) if policy.min_side is None else min(policy.min_side, traced)
    why = f"no smaller side fits the model (its total stride is {policy.min_side})"
    return smallest, high, f"{why}, and {capped}" if high == traced else why


@dataclass
class CheckedExport:
    """An exported part, the ranges it was checked over, and what had to be given up."""

    file: ExportedFile
    part: ExportPart
    ranges: list[DimRange]
    fixed: list[FixedDim] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    check: RangeCheck | None = None

    @property
    def passed(self) -> bool:
        return self.check is None or self.check.passed

    def failures(self) -> list[str]:
        return [] if self.check is None else self.check.failures(self.file.path.name)

    def warnings(self) -> list[str]:
        name = self.file.path.name
        return [f"{name}: {f.line()}" for f in self.fixed] + [f"{name}: {n}" for n in self.notes]

    def record(self) -> dict[str, Any]:
        return {
            "ranges": [r.to_dict() for r in self.ranges],
            "fixed": [f.to_dict() for f in self.fixed],
        }


def declare(
    part: ExportPart, target: Target, policy: RangePolicy
) -> tuple[ExportPart, list[FixedDim]]:
    """``part`` with its declared ranges (what ``check_part`` and ``export_checked`` take),
    and the asked dims that cannot vary at all."""
    ranges, fixed = declared_ranges(part, target, policy)
    return with_ranges(part, ranges), fixed


def export_checked(
    target: Target,
    part: ExportPart,
    stage: Path,
    reference: nn.Module,
    base: tuple[torch.Tensor, ...],
    fixed: list[FixedDim],
    *,
    precision: str,
    gate_outputs: frozenset[str] = frozenset(),
    keep_failed: bool = False,
    progress: Progress = SILENT,
) -> CheckedExport:
    """Export ``part`` (from ``declare``) into ``stage``, check every point of its ranges
    against ``reference`` (fed ``base`` resized, in float32), and narrow and re-export until
    the file is right everywhere it says it runs.

    A file wrong at its traced shape is the export's failure: ValidationFailed, unless
    ``keep_failed`` (an INT8 export, judged and kept for inspection by its caller), where the
    failed check is returned."""
    ranges = list(part.ranges)
    notes: list[str] = []
    feed = {n: a.detach().float().numpy() if a.is_floating_point() else a.numpy()
            for n, a in zip(part.input_names, base, strict=True)}  # fmt: skip
    tolerance = Tolerance.for_precision(precision)
    for _ in range(MAX_ATTEMPTS):
        current = _batch_one_where_fixed(with_ranges(part, ranges), part)
        fixed = [_at_batch_one(f, current) for f in fixed]
        written = target.export(current, stage)
        ranges, exporter_fixed = _kept_dynamic(ranges, written)
        fixed = [*fixed, *exporter_fixed]
        base_feed = _at_traced(feed, written, current, ranges)
        check = _check(
            target, written, current, reference, ranges, base_feed, tolerance, gate_outputs,
            progress,
        )  # fmt: skip
        if check.passed:
            return CheckedExport(written, current, ranges, fixed, notes, check)
        narrowed = narrow(check)
        if narrowed is None and keep_failed:
            return CheckedExport(written, current, ranges, fixed, notes, check)
        if narrowed is None:
            raise ValidationFailed(
                f"{written.path.name} disagrees with PyTorch at its traced shape: "
                + "; ".join(check.failures(written.path.name))
            )
        ranges, fixed, notes = narrowed.ranges, [*fixed, *narrowed.fixed], [*notes, *narrowed.notes]
    raise ValidationFailed(
        f"{part.stem}: still wrong after {MAX_ATTEMPTS} exports with narrower ranges: "
        + "; ".join(check.failures(written.path.name))
    )


def _batch_one_where_fixed(current: ExportPart, asked: ExportPart) -> ExportPart:
    """A batch that was asked to vary but is now fixed is fixed at 1, the deployed batch:
    models outside the zoo are traced at batch 2 (so their ``size(0)`` stays a symbol), and
    a graph that bakes its batch in anyway should take one row, not two."""
    args = list(current.args)
    changed = False
    for index, (arg, dims) in enumerate(zip(current.args, current.dynamic_dims, strict=True)):
        wanted = asked.dynamic_dims[index] if index < len(asked.dynamic_dims) else ()
        if 0 in wanted and 0 not in dims and arg.dim() and arg.shape[0] > 1:
            args[index], changed = arg[:1], True
    return dataclasses.replace(current, args=tuple(args)) if changed else current


def _at_batch_one(fixed: FixedDim, current: ExportPart) -> FixedDim:
    """A fixed batch records the size the file was exported at."""
    if fixed.axis != 0 or fixed.input not in current.input_names:
        return fixed
    size = int(current.args[current.input_names.index(fixed.input)].shape[0])
    return fixed if size == fixed.size else dataclasses.replace(fixed, size=size)


def with_ranges(part: ExportPart, ranges: list[DimRange]) -> ExportPart:
    """``part`` asked to vary exactly the dims of ``ranges``, within them (the same part when
    nothing changes, so a target's checks of it stay valid)."""
    dims = [tuple(r.axis for r in ranges if r.index == index) for index in range(len(part.args))]
    if dims == [tuple(d) for d in part.dynamic_dims] and tuple(ranges) == part.ranges:
        return part
    return dataclasses.replace(part, dynamic_dims=dims, ranges=tuple(ranges))


def _at_traced(
    feed: dict[str, np.ndarray], written: ExportedFile, part: ExportPart, ranges: list[DimRange]
) -> dict[str, np.ndarray]:
    """The check's base inputs: every dim at its size in the file (a fixed dim) or its traced
    size, except a varying batch, which keeps every row given."""
    batch_varies = any(r.name == BATCH for r in ranges)
    out = {}
    for index, name in enumerate(part.input_names):
        array = feed[name]
        for axis, size in enumerate(written.inputs[index].shape):
            if axis == 0 and batch_varies:
                continue
            want = size if isinstance(size, int) else int(part.args[index].shape[axis])
            array = resize(array, axis, want)
        out[name] = array
    return out


def _kept_dynamic(
    ranges: list[DimRange], written: ExportedFile
) -> tuple[list[DimRange], list[FixedDim]]:
    """The ranges whose dim the exporter kept symbolic; the others, fixed, with its reason."""
    kept, fixed = [], []
    reasons = written.static_reasons
    for r in ranges:
        shape = written.inputs[r.index].shape
        if isinstance(shape[r.axis], str):
            kept.append(r)
            continue
        why = reasons.get(r.label, "the exporter specialised it: the model takes this size only")
        fixed.append(FixedDim(r.input, r.axis, r.name, int(shape[r.axis]), why))
    return kept, fixed


def _check(
    target: Target,
    written: ExportedFile,
    part: ExportPart,
    reference: nn.Module,
    ranges: list[DimRange],
    feed: dict[str, np.ndarray],
    tolerance: Tolerance,
    gate_outputs: frozenset[str],
    progress: Progress,
) -> RangeCheck:
    with target.runner(written.path, threads=2) as candidate:
        return run_check(
            reference,
            part.input_names,
            part.output_names,
            candidate,
            ranges,
            feed,
            tolerance,
            classifier_outputs=part.classifier_outputs,
            gate_outputs=gate_outputs & set(part.output_names),
            title=f"check {written.path.name} over its ranges",
            progress=progress,
        )


def run_check(
    reference: nn.Module,
    input_names: list[str],
    output_names: list[str],
    candidate: Runner,
    ranges: list[DimRange],
    feed: dict[str, np.ndarray],
    tolerance: Tolerance,
    *,
    classifier_outputs: frozenset[str],
    gate_outputs: frozenset[str],
    title: str,
    progress: Progress = SILENT,
) -> RangeCheck:
    """``check_ranges`` of a torch reference against an active runner, the feeds cast to the
    runner's input dtypes (an fp16 file's halves), with progress per probe."""
    dtypes = {spec.name: spec.dtype for spec in candidate.input_specs()}

    def cast(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {
            name: np.ascontiguousarray(
                array.astype(dtypes[name])
                if dtypes.get(name) and array.dtype.kind == "f"
                else array
            )
            for name, array in batch.items()
        }

    with (
        TorchRunner(reference, input_names, output_names) as ref,
        progress.phase(title, total=len(probes(ranges))) as step,
    ):
        return check_ranges(
            ref,
            candidate,
            ranges,
            feed,
            tolerance,
            classifier_outputs=classifier_outputs,
            gate_outputs=gate_outputs,
            cast=cast,
            on_probe=lambda done, total: step(done),
        )
