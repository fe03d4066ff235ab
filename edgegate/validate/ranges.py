"""Check an export over the ranges it declares, not at its traced shape alone.

A graph can run at its traced shape and be wrong elsewhere: a Python loop over chunks of T
unrolls into a fixed number of chunks, a reshape reads the batch as a constant. Each declared
dim is run at each of its ``DimRange.points()`` (one dim varied at a time, the others at their
traced size, the batch above 1 where it may be), reference and candidate on the same inputs,
judged with the precision's tolerance. A size the candidate refuses or gets wrong is named;
``narrow`` then says what the export may honestly declare instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from edgegate.dims import BATCH, DimRange, FixedDim
from edgegate.runtime import Runner
from edgegate.validate.parity import Tolerance, compare_outputs

Cast = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass(frozen=True)
class Probe:
    """One run: the size each varied dim takes (every other dim at its traced size)."""

    sizes: dict[str, int]  # dim name -> size
    varied: str | None  # the dim this probe is about (None: the base point)

    @property
    def label(self) -> str:
        return ", ".join(f"{name}={size}" for name, size in self.sizes.items())


@dataclass
class ProbeResult:
    probe: Probe
    problem: str = ""  # "" when the candidate ran and matched
    refused_by_reference: bool = False  # the PyTorch model itself does not take this size

    @property
    def ok(self) -> bool:
        return not self.problem

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {"sizes": dict(self.probe.sizes), "passed": self.ok}
        if self.problem:
            record["problem"] = self.problem
        return record


@dataclass
class RangeCheck:
    """Every probe of one graph, and the verdict."""

    ranges: list[DimRange]
    results: list[ProbeResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.ok for r in self.results)

    def failures(self, file_name: str) -> list[str]:
        return [f"{file_name} at {r.probe.label}: {r.problem}" for r in self.results if not r.ok]

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "ranges": [r.to_dict() for r in self.ranges],
            "probes": [r.to_dict() for r in self.results],
        }


def base_batch(ranges: list[DimRange]) -> int | None:
    """The batch every non-batch probe runs at: 2 where the batch may be 2 (above 1, so a
    graph that baked in batch 1 shows), else None (the inputs' own batch)."""
    batch = next((r for r in ranges if r.name == BATCH), None)
    if batch is None:
        return None
    return 2 if batch.low <= 2 <= batch.high else batch.traced


def probes(ranges: list[DimRange]) -> list[Probe]:
    """The base point, then each dim at each of its points other than the base's."""
    base = base_batch(ranges)
    start = {BATCH: base} if base is not None else {}
    found = [Probe(dict(start), None)]
    names = list(dict.fromkeys(r.name for r in ranges))  # shared names (batch) vary together
    for name in names:
        points = sorted({p for r in ranges if r.name == name for p in r.points()})
        for point in points:
            if name == BATCH and point == base:
                continue
            if name != BATCH and all(point == r.traced for r in ranges if r.name == name):
                continue
            found.append(Probe({**start, name: point}, name))
    return found


def resize(array: np.ndarray, axis: int, size: int) -> np.ndarray:
    """``array`` with dim ``axis`` set to ``size``: rows or tokens cut or repeated; float
    signals (image sides, feature maps) resampled linearly, so they stay like real data."""
    current = array.shape[axis]
    if current == size:
        return array
    if size == 0:  # an empty KV cache: a fresh stream
        return np.take(array, range(0), axis=axis)
    if axis == 0 or array.dtype.kind != "f":
        if size < current:
            return np.take(array, range(size), axis=axis)
        reps = -(-size // current)
        tiled = np.concatenate([array] * reps, axis=axis)
        return np.take(tiled, range(size), axis=axis)
    moved = torch.from_numpy(np.ascontiguousarray(np.moveaxis(array, axis, -1)))
    flat = moved.reshape(-1, 1, current).float()
    resampled = F.interpolate(flat, size=size, mode="linear", align_corners=False)
    out = resampled.reshape(*moved.shape[:-1], size).numpy().astype(array.dtype)
    return np.ascontiguousarray(np.moveaxis(out, -1, axis))


def probe_feed(
    base: dict[str, np.ndarray], ranges: list[DimRange], probe: Probe
) -> dict[str, np.ndarray]:
    """``base`` (inputs at their traced shape) with each probed dim resized."""
    feed = dict(base)
    for r in ranges:
        size = probe.sizes.get(r.name)
        if size is not None:
            feed[r.input] = resize(feed[r.input], r.axis, size)
    return {name: np.ascontiguousarray(array) for name, array in feed.items()}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    text = re.sub(r"^'[^']+' rejected the inputs: ", "", text)  # the runner's own preamble
    return text.splitlines()[0][:300] if text else type(exc).__name__


def check_ranges(
    reference: Runner,
    candidate: Runner,
    ranges: list[DimRange],
    base: dict[str, np.ndarray],
    tolerance: Tolerance,
    *,
    classifier_outputs: frozenset[str] = frozenset(),
    gate_outputs: frozenset[str] = frozenset(),
    cast: Cast | None = None,
    on_probe: Callable[[int, int], None] | None = None,
) -> RangeCheck:
    """Run every probe of ``ranges`` through both runners and judge each pair of outputs.

    ``base`` holds the inputs at their traced shapes (real data where there is some);
    ``cast`` turns a feed into the candidate's input dtypes (an fp16 export's halves).
    """
    check = RangeCheck(list(ranges))
    planned = probes(ranges)
    for count, probe in enumerate(planned, 1):
        feed = probe_feed(base, ranges, probe)
        check.results.append(
            _run_probe(
                reference,
                candidate,
                feed,
                probe,
                tolerance,
                classifier_outputs,
                gate_outputs,
                cast,
            )  # fmt: skip
        )
        if on_probe is not None:
            on_probe(count, len(planned))
    return check


def _run_probe(
    reference: Runner,
    candidate: Runner,
    feed: dict[str, np.ndarray],
    probe: Probe,
    tolerance: Tolerance,
    classifier_outputs: frozenset[str],
    gate_outputs: frozenset[str],
    cast: Cast | None,
) -> ProbeResult:
    try:
        want = reference.run(feed)
    except Exception as exc:  # the model itself does not take this size
        return ProbeResult(probe, f"refused by PyTorch: {_first_line(exc)}", True)
    try:
        got = candidate.run(cast(feed) if cast is not None else feed)
    except Exception as exc:  # the runtime's own error types: the graph refuses this size
        return ProbeResult(probe, f"refused: {_first_line(exc)}")
    report = compare_outputs(
        want,
        {name: np.asarray(value, dtype=np.float32) for name, value in got.items()},
        tolerance,
        gate_outputs=gate_outputs,
        classifier_outputs=classifier_outputs,
    )
    if report.passed:
        return ProbeResult(probe)
    return ProbeResult(probe, "wrong: " + "; ".join(report.failures))


@dataclass(frozen=True)
class Narrowed:
    """What an export may declare after a failed check: the ranges that passed (cut to the
    points that passed), and the dims to fix at their traced size, each with the reason."""

    ranges: list[DimRange]
    fixed: list[FixedDim]
    notes: list[str]


def narrow(check: RangeCheck) -> Narrowed | None:
    """Cut each failing range to the part of it that passed, around the traced size; None when
    nothing can be cut: the graph fails at its traced shape itself.

    A failing base point (every dim traced, the batch at 2) is the batch's fault when the
    traced batch passes: then the batch alone is fixed, and the other dims wait for the next
    check. Otherwise a dim
    whose failures lie above its traced size keeps ``[low, traced]``, below it
    ``[traced, high]``; one that fails on both sides is fixed at its traced size."""
    base = next(x for x in check.results if x.probe.varied is None)
    if not base.ok:
        batch = next((r for r in check.ranges if r.name == BATCH), None)
        if batch is None or BATCH not in base.probe.sizes:
            return None
        traced = [
            x for x in check.results
            if x.probe.varied == BATCH and x.probe.sizes[BATCH] == batch.traced
        ]  # fmt: skip
        if not all(x.ok for x in traced):
            return None  # wrong at the traced batch too: not the batch's fault
        others = [r for r in check.ranges if r is not batch]
        fixed = FixedDim(batch.input, batch.axis, batch.name, batch.traced, _reason([base]))
        return Narrowed(others, [fixed], [])
    ranges, fixed, notes = [], [], []
    for r in check.ranges:
        failed = [x for x in check.results if not x.ok and x.probe.varied == r.name]
        if not failed:
            ranges.append(r)
            continue
        sizes = sorted({x.probe.sizes[r.name] for x in failed})
        reason = _reason(failed)
        below = [s for s in sizes if s < r.traced]
        above = [s for s in sizes if s > r.traced]
        low = max(below) + 1 if below else r.low
        high = min(above) - 1 if above else r.high
        low, high = _passed_bounds(r, check, low, high)
        if (below and above) or low == high:
            fixed.append(FixedDim(r.input, r.axis, r.name, r.traced, reason))
            continue
        ranges.append(r.with_bounds(low, high))
        notes.append(f"{r.label} declared {low}..{high} instead of {r.low}..{r.high}: {reason}")
    return Narrowed(ranges, fixed, notes)


def _passed_bounds(r: DimRange, check: RangeCheck, low: int, high: int) -> tuple[int, int]:
    """The narrowed bounds pulled in to sizes that were checked and passed (a range's ends are
    always checked points)."""
    passed = sorted(
        {x.probe.sizes[r.name] for x in check.results if x.ok and r.name in x.probe.sizes}
        | {r.traced}
    )
    inside = [p for p in passed if low <= p <= high]
    return (min(inside), max(inside)) if inside else (r.traced, r.traced)


def _reason(failed: list[ProbeResult]) -> str:
    """One line for a dim's failures: the sizes refused (by PyTorch itself, or by the
    candidate) and the sizes that ran wrong, each kind with its first message."""
    kinds = (
        ("PyTorch itself refuses", [x for x in failed if x.refused_by_reference]),
        ("refused", [x for x in failed if not x.refused_by_reference and _is_refusal(x)]),
        ("wrong", [x for x in failed if not x.refused_by_reference and not _is_refusal(x)]),
    )
    parts = []
    for word, group in kinds:
        if not group:
            continue
        name = group[0].probe.varied
        sizes = [str(x.probe.sizes[name]) if name else x.probe.label for x in group]
        where = f"{name}={', '.join(sizes)}" if name else ", ".join(sizes)
        detail = group[0].problem.split(": ", 1)[-1]
        parts.append(f"{word} at {where} ({detail})")
    return "; ".join(parts)


def _is_refusal(result: ProbeResult) -> bool:
    return result.problem.startswith("refused")
