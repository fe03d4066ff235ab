"""torch.export for Core ML: explicit shape ranges, edgegate's ops decomposed, scans marked.

Core ML needs a range for every flexible dim, and coremltools takes neither edgegate's custom
ops nor loops, so the exported program gets the loop-free scan forms (`edgegate.ops.decompose`)
with the sequence length still symbolic. Export is size-oblivious: otherwise torch.export
specialises a CNN whose last feature map can be 1x1 (a 32x32 input) to that one size.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.fx.experimental import _config as fx_config

from edgegate.dims import shapes_for_signature
from edgegate.errors import BadInput
from edgegate.models.checkpoint import export_failure
from edgegate.ops.decompose import SCAN_OP_NAMES, decompose, remaining_edgegate_ops

MAX_BATCH = 64
MAX_SIDE_FACTOR = 16  # image-like dims range from the example size to 16x it (32 -> 512)


@dataclass(frozen=True)
class DimRange:
    """The values one flexible input dim takes in the package."""

    input_index: int
    dim: int
    low: int
    high: int


def dim_ranges(
    args: Sequence[torch.Tensor],
    dynamic_dims: Sequence[Sequence[int]],
    *,
    sequence: bool,
    bounds: dict[tuple[int, int], tuple[int, int]] | None = None,
) -> list[DimRange]:
    """The declared ``bounds`` of a dim (input index, dim) where given; else batch 1..64, a
    sequence dim 1..its example length (the decomposition's max_len), and other dims (image
    sides, feature maps) from the example size up to 16x it."""
    ranges = []
    for index, (arg, dims) in enumerate(zip(args, dynamic_dims, strict=True)):
        for dim in dims:
            size = int(arg.shape[dim])
            if bounds and (index, dim) in bounds:
                ranges.append(DimRange(index, dim, *bounds[(index, dim)]))
            elif dim == 0:
                ranges.append(DimRange(index, dim, 1, max(MAX_BATCH, size)))
            elif sequence:
                ranges.append(DimRange(index, dim, 1, size))
            else:
                ranges.append(DimRange(index, dim, size, size * MAX_SIDE_FACTOR))
    return ranges


def export_program(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    ranges: Sequence[DimRange],
    max_len: int,
) -> torch.export.ExportedProgram:
    """The decomposed program of ``module`` with ``ranges`` symbolic; BadInput if it fails.

    A model whose code branches on a length of 1 (attention over a single token) gets its
    sequence range from 2 instead: the range in the package says so.
    """
    try:
        ranges = _dims_that_vary(module, args, ranges)
        program = _export(module, args, ranges)
    except Exception as exc:  # torch.export reports guards and unsupported code this way
        from_two = [DimRange(r.input_index, r.dim, 2, r.high) if r.low == 1 and r.dim else r
                    for r in ranges]  # fmt: skip
        try:
            if from_two == list(ranges):
                raise
            program = _export(module, args, from_two)
        except Exception:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            message = f"torch.export of {type(module).__name__} failed: {first}"
            raise export_failure(module, message) from exc
    try:
        with fx_config.patch(backed_size_oblivious=True):  # no batch-1 specialisation either
            program = decompose(program, max_len)
    except Exception as exc:
        raise BadInput(f"decomposing edgegate's ops failed: {exc}") from None
    left = remaining_edgegate_ops(program)
    if left:
        raise BadInput(f"edgegate ops without a Core ML decomposition: {', '.join(left)}")
    missing = unconvertible_ops(program)
    if missing:
        raise BadInput(
            f"{type(module).__name__} uses ops Core ML cannot take: {', '.join(missing)}"
        )
    return program


def _dims_that_vary(
    module: nn.Module, args: tuple[torch.Tensor, ...], ranges: Sequence[DimRange]
) -> list[DimRange]:
    """The ranges whose dim the model lets vary, found by running it at another size along
    each: a ViT's learned position table fixes its image side, for one. (Export alone cannot
    tell: size-oblivious tracing lets a [B, N+1, d] + [1, 17, d] through for every N.)"""
    kept = []
    for r in ranges:
        size = int(args[r.input_index].shape[r.dim])
        other = r.high if r.high != size else r.low
        if other == size:
            continue
        probe = list(args)
        shape = list(probe[r.input_index].shape)
        shape[r.dim] = other
        probe[r.input_index] = torch.zeros(shape, dtype=probe[r.input_index].dtype)
        try:  # (an FX-traced module prints the traceback of a failure: keep it quiet)
            with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
                module(*probe)
        except Exception:  # the model itself does not take that size: the dim is fixed
            continue
        kept.append(r)
    return kept


def _export(
    module: nn.Module, args: tuple[torch.Tensor, ...], ranges: Sequence[DimRange]
) -> torch.export.ExportedProgram:
    # Dim.AUTO within the range: a dim the model's code fixes (a Python loop over chunks of
    # the traced length) is specialised to its example size instead of failing the export; the
    # package's inputs then show it static, and the manifest says why
    shapes: list[dict[int, object] | None] = [None] * len(args)
    for r in ranges:
        dims = shapes[r.input_index] or {}
        dims[r.dim] = torch.export.Dim.AUTO(min=r.low, max=r.high)
        shapes[r.input_index] = dims
    with torch.no_grad(), fx_config.patch(backed_size_oblivious=True):
        return torch.export.export(
            module.eval(), args, dynamic_shapes=shapes_for_signature(module.forward, shapes)
        )


def scan_region(program: torch.export.ExportedProgram) -> set[str]:
    """Names of the nodes that a scan's decomposition produced (they keep fp32 under fp16).

    Decomposition records provenance in ``meta["from_node"]``: a node belongs to a scan when
    its chain of sources passes through a node named after a scan op.
    """
    names = set()
    for node in program.graph.nodes:
        sources = node.meta.get("from_node") or []
        source = sources[-1] if sources else None
        while source is not None:
            if source.name.startswith(SCAN_OP_NAMES):
                names.add(node.name)
                break
            source = source.from_node[-1] if source.from_node else None
    return names


def unconvertible_ops(program: torch.export.ExportedProgram) -> list[str]:
    """Graph ops that coremltools has no converter for, found before the (slow) conversion."""
    from edgegate.exporters.coreml.quiet import coremltools

    coremltools()  # imported quietly first
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY

    missing = set()
    for node in program.graph.nodes:
        if node.op != "call_function" or not hasattr(node.target, "_opname"):
            continue
        name = node.target._opname
        candidates = (name, name.lstrip("_"), name.rstrip("_"), name.lower())
        if not any(_TORCH_OPS_REGISTRY.get_func(c) is not None for c in candidates):
            missing.add(str(node.target).split(".default")[0])
    return sorted(missing)
