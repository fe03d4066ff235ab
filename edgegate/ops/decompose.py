"""Edgegate's ops as core aten, for converters that take neither custom ops nor loops.

`torch.export` keeps each scan as one `torch.ops.edgegate.*` node (for the ONNX and TensorRT
targets, which map it to a custom node). Core ML and ExecuTorch need plain aten instead:
`decompose` rewrites those nodes into the loop-free forms (`*/parallel.py`) while keeping the
sequence length symbolic, up to ``max_len``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping

import torch

from edgegate.ops import custom_ops  # noqa: F401  (registers torch.ops.edgegate.*)
from edgegate.ops._parallel import MAX_PARALLEL_T
from edgegate.ops.clipped_softmax.naive import naive_clipped_softmax
from edgegate.ops.delta_rule.parallel import parallel_gated_delta_rule
from edgegate.ops.gla.parallel import parallel_gated_linear_attention
from edgegate.ops.linear_scan.parallel import parallel_gated_linear_scan

SCAN_OP_NAMES = ("gated_linear_scan", "gated_linear_attention", "gated_delta_rule")


def edgegate_decompositions(max_len: int = MAX_PARALLEL_T) -> dict[object, Callable]:
    """Each edgegate op overload -> its loop-free aten form (scans valid for T <= max_len)."""
    if not 1 <= max_len <= MAX_PARALLEL_T:
        raise ValueError(f"max_len must be in [1, {MAX_PARALLEL_T}], got {max_len}")
    ops = torch.ops.edgegate
    return {
        ops.gated_linear_scan.default: parallel_gated_linear_scan,
        ops.gated_linear_attention.default: parallel_gated_linear_attention,
        ops.gated_delta_rule.default: functools.partial(parallel_gated_delta_rule, max_len=max_len),
        ops.clipped_softmax.default: naive_clipped_softmax,
    }


def decompose(
    program: torch.export.ExportedProgram,
    max_len: int = MAX_PARALLEL_T,
    *,
    core_aten: bool = True,
    extra: Mapping[object, Callable] | None = None,
    keep: Iterable[object] = (),
) -> torch.export.ExportedProgram:
    """``program`` with every edgegate op in loop-free aten (and, by default, in core aten);
    ``extra`` adds a converter's own rewrites to the same pass (one retrace); ops in ``keep``
    stay whole (a converter that maps them itself: torchao's dequantize to a constexpr)."""
    table = torch.export.default_decompositions() if core_aten else {}
    for op in keep:
        table.pop(op, None)
    table.update(edgegate_decompositions(max_len))
    table.update(extra or {})
    return program.run_decompositions(table)


def remaining_edgegate_ops(program: torch.export.ExportedProgram) -> list[str]:
    """Names of edgegate ops still in the graph (none after `decompose`)."""
    return sorted(
        {
            str(node.target)
            for node in program.graph.nodes
            if node.op == "call_function" and str(node.target).startswith("edgegate.")
        }
    )
