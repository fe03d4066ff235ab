"""Golden cases of a kit: seeded rows of the task's data, batch over 1, LMs at two lengths
within the declared range, the same every time."""

from __future__ import annotations

import torch

from edgegate.dims import DimRange
from edgegate.pipeline.golden import GOLDEN_IMAGES, golden_cases, pick_rows
from edgegate.pipeline.tasks import TASKS
from edgegate.targets import ExportPart


def _part(args, ranges, stem="model") -> ExportPart:
    return ExportPart(stem, torch.nn.Identity(), args, ["x"], ["y"], [(0,)], ranges=ranges)


def test_rows_are_drawn_with_a_fixed_seed():
    assert pick_rows(100, 8) == pick_rows(100, 8) and len(set(pick_rows(100, 8))) == 8
    assert pick_rows(5, 8) == [0, 1, 2, 3, 4]


def test_image_cases_are_eight_real_rows_in_one_call_within_the_declared_batch():
    rows = torch.arange(40 * 3, dtype=torch.float32).reshape(40, 3)
    part = _part((torch.zeros(1, 3),), (DimRange("x", 0, 0, "batch", 1, 1, 8),))
    [done] = golden_cases(TASKS["image"], rows, [part], lambda r: {"model": (r,)})
    assert [tuple(a[0].shape) for a in done.samples] == [(GOLDEN_IMAGES, 3)]
    assert torch.equal(done.samples[0][0], rows[pick_rows(40, 8)])
    narrow = _part((torch.zeros(1, 3),), (DimRange("x", 0, 0, "batch", 1, 1, 4),))
    [done] = golden_cases(TASKS["image"], rows, [narrow], lambda r: {"model": (r,)})
    assert [tuple(a[0].shape) for a in done.samples] == [(4, 3), (4, 3)]


def test_lm_cases_are_two_sequences_at_two_lengths_in_the_graphs_dtype():
    rows = torch.arange(30 * 16).reshape(30, 16) % 256
    ranges = (
        DimRange("tokens", 0, 0, "batch", 1, 1, 8),
        DimRange("tokens", 0, 1, "seq_len", 1, 16, 32),
    )
    part = _part((torch.zeros(1, 16, dtype=torch.int32),), ranges)
    [done] = golden_cases(TASKS["lm"], rows, [part], lambda r: {"model": (r,)})
    assert [tuple(a[0].shape) for a in done.samples] == [(2, 16), (2, 8)]
    assert all(a[0].dtype == torch.int32 for a in done.samples)
    again = golden_cases(TASKS["lm"], rows, [part], lambda r: {"model": (r,)})[0]
    assert all(torch.equal(a[0], b[0]) for a, b in zip(done.samples, again.samples, strict=True))
    fixed = _part((torch.zeros(1, 16, dtype=torch.int64),), ranges[:1])  # length not declared
    [done] = golden_cases(TASKS["lm"], rows, [fixed], lambda r: {"model": (r,)})
    assert [tuple(a[0].shape) for a in done.samples] == [(2, 16)]
