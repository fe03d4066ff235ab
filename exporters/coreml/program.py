"""torch.export for Core ML: explicit shape ranges, edgegate's ops decomposed, scans marked.

Core ML needs a range for every flexible dim, and coremltools takes neither edgegate's custom
ops nor loops, so the exported program gets the loop-free scan forms (`edgegate.ops.decompose`)
with the sequence length still symbolic. Export is size-oblivious: otherwise torch.export
specialises a CNN whose last feature map can be 1x1 (a 32x32 input) to that one size.

A ``where`` whose condition is larger than both of its values (transformers' attention mask:
``where(causal [B,1,T,T], 0.0, min)``) gets its first value broadcast to the condition first:
coremltools' ``select`` declares the broadcast of its two values alone, and only broadcasts
all three itself when every shape is static, so with a symbolic length the program would
declare a scalar for a [B,1,T,T] mask (`broadcast_where_values`).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.fx.experimental import _config as fx_config

from edgegate.dims import shapes_for_signature
from edgegate.errors import BadInput, InternalError, first_line, raised_in_edgegate
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
        with bfloat16_as_float32(module):
            ranges = _dims_that_vary(module, args, ranges)
            program = _export(module, args, ranges)
    except Exception as exc:  # torch.export reports guards and unsupported code this way
        from_two = [DimRange(r.input_index, r.dim, 2, r.high) if r.low == 1 and r.dim else r
                    for r in ranges]  # fmt: skip
        try:
            if from_two == list(ranges):
                raise
            with bfloat16_as_float32(module):
                program = _export(module, args, from_two)
        except Exception:
            first = first_line(exc)
            message = f"torch.export of {type(module).__name__} failed: {first}"
            if raised_in_edgegate(exc):
                raise InternalError(f"{message} (in edgegate's code)") from exc
            raise export_failure(module, message) from exc
    try:
        with fx_config.patch(backed_size_oblivious=True):  # no batch-1 specialisation either
            program = decompose(program, max_len, keep=converted_whole())
    except Exception as exc:  # edgegate rewrites its own ops here: never the input's fault
        raise InternalError(f"decomposing edgegate's ops for Core ML failed: {exc}") from exc
    broadcast_where_values(program)
    left = remaining_edgegate_ops(program)
    if left:  # edgegate's gap, not the model's
        raise InternalError(f"edgegate ops without a Core ML decomposition: {', '.join(left)}")
    missing = unconvertible_ops(program)
    if missing:
        raise BadInput(
            f"{type(module).__name__} uses ops Core ML cannot take: {', '.join(missing)}"
        )
    in_bf16 = bfloat16_nodes(program)
    if in_bf16:
        raise BadInput(
            f"{type(module).__name__} computes in bfloat16, which Core ML lacks "
            f"({', '.join(in_bf16[:3])}): load it in float32"
        )
    return program


def converted_whole() -> list[object]:
    """Ops coremltools converts itself, kept out of the core-aten decomposition: torchao's
    ``dequantize_affine`` of int4 or int8 codes, which its torch frontend turns into a
    constexpr weight (iOS18: ``constexpr_blockwise_shift_scale``) holding those codes and
    scales. Decomposed, it would be folded into a float weight. Empty without torchao."""
    namespace = getattr(torch.ops, "torchao", None)
    op = getattr(namespace, "dequantize_affine", None) if namespace is not None else None
    return [op.default] if op is not None else []


@contextlib.contextmanager
def bfloat16_as_float32(module: nn.Module) -> Iterator[None]:
    """``module``'s bfloat16 parameters and buffers as float32 copies while it is exported,
    then the originals back. Core ML has no bfloat16 (coremltools fails on the dtype), and the
    widening is exact: transformers' RecurrentGemma keeps its embedding scale as a bfloat16
    buffer that it casts to the activations' float32, which then is a no-op."""
    swapped: list[tuple[dict, str, torch.Tensor]] = []
    widened: dict[int, torch.Tensor] = {}  # a tensor shared by modules stays shared
    try:
        for sub in module.modules():
            for store in (sub._parameters, sub._buffers):
                for name, tensor in store.items():
                    if tensor is None or tensor.dtype != torch.bfloat16:
                        continue
                    if id(tensor) not in widened:
                        wide = tensor.detach().float()
                        if isinstance(tensor, nn.Parameter):
                            wide = nn.Parameter(wide, requires_grad=tensor.requires_grad)
                        widened[id(tensor)] = wide
                    swapped.append((store, name, tensor))
                    store[name] = widened[id(tensor)]
        yield
    finally:
        for store, name, tensor in reversed(swapped):
            store[name] = tensor


def bfloat16_nodes(program: torch.export.ExportedProgram) -> list[str]:
    """Names of the graph nodes that make or take bfloat16 (none once `bfloat16_as_float32`
    widened the model's own tensors, unless its code casts to bfloat16 itself)."""
    found = []
    for node in program.graph.nodes:
        val = node.meta.get("val")
        dtypes = [getattr(val, "dtype", None), *node.args, *node.kwargs.values()]
        if any(d is torch.bfloat16 for d in dtypes):
            found.append(node.name)
    return found


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


def broadcast_where_values(program: torch.export.ExportedProgram) -> int:
    """Broadcast, in place, the first value of each ``where`` whose condition widens its output
    beyond the broadcast of its two values (``where(c, a, b)`` -> ``where(c, a + zeros(c), b)``);
    returns how many were rewritten.

    coremltools converts ``where`` to a MIL ``select`` whose declared type is the broadcast of
    ``a`` and ``b`` only (the condition's shape is left out); it broadcasts all three itself
    only when no shape is symbolic. With a symbolic length the package then declares, say, a
    scalar for a [B,1,T,T] mask: a type its own values contradict, which edgegate's emulator
    refuses and a device's shape propagation need not survive. Adding zeros shaped like the
    condition keeps every value (-inf and NaN included) and makes the declared type the true
    one.
    """
    graph = program.graph_module.graph
    where = torch.ops.aten.where.self
    count = 0
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target != where or len(node.args) != 3:
            continue
        cond, a, b = node.args
        out = node.meta.get("val")
        values = [getattr(x, "meta", {}).get("val") for x in (cond, a, b)]
        if out is None or any(v is None for v in values):
            continue
        if not _cond_widens(tuple(values[1].shape), tuple(values[2].shape), tuple(out.shape)):
            continue
        fake_mode = torch._guards.detect_fake_mode(values)
        with graph.inserting_before(node):
            zeros = graph.call_function(
                torch.ops.aten.full_like.default, (cond, 0.0), {"dtype": out.dtype}
            )
            widened = graph.call_function(torch.ops.aten.add.Tensor, (a, zeros))
        with fake_mode or contextlib.nullcontext():
            zeros.meta["val"] = torch.ops.aten.full_like.default(values[0], 0.0, dtype=out.dtype)
            widened.meta["val"] = torch.ops.aten.add.Tensor(values[1], zeros.meta["val"])
        for new in (zeros, widened):
            for key in ("stack_trace", "nn_module_stack", "from_node"):
                if key in node.meta:
                    new.meta[key] = node.meta[key]
        node.args = (cond, widened, b)
        count += 1
    if count:
        graph.lint()
        program.graph_module.recompile()
    return count


def _cond_widens(a: tuple, b: tuple, out: tuple) -> bool:
    """Whether ``out`` (the broadcast of condition, a and b) is larger than that of a and b:
    a higher rank, or a dim that a and b both leave at 1 (or lack) and the output does not."""
    if len(out) > max(len(a), len(b)):
        return True
    for i in range(1, len(out) + 1):
        dims = [s[-i] for s in (a, b) if len(s) >= i]
        if all(_is_one(d) for d in dims) and not _is_one(out[-i]):
            return True
    return False


def _is_one(dim: object) -> bool:
    return isinstance(dim, int) and dim == 1


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


_SCORING = frozenset(
    {
        torch.ops.aten.mm.default,
        torch.ops.aten.addmm.default,
        torch.ops.aten.bmm.default,
        torch.ops.aten.matmul.default,
        torch.ops.aten.linear.default,
    }
)
ROUTER_DEPTH = 8  # ops between a top-k and the matmul that scores its choices, at most


def routing_region(program: torch.export.ExportedProgram) -> set[str]:
    """Names of the nodes of each top-k choice over computed scores, back to the matmul that
    made them: a mixture of experts' router (linear, softmax, top-k). They keep fp32 under
    fp16, as the scans do: the choice is discrete, and a tiny model's (or a balanced router's)
    scores lie within a half step of each other, so fp16 scores pick another expert for some
    tokens and move their outputs by far more than fp16's rounding elsewhere. The router's
    input stays fp16; only its scoring is widened (a few ops per MoE layer)."""
    names = set()
    for node in program.graph.nodes:
        if node.op != "call_function" or node.target != torch.ops.aten.topk.default:
            continue
        names.add(node.name)
        walked, current = [], node.args[0]
        while isinstance(current, torch.fx.Node) and current.op == "call_function":
            walked.append(current.name)
            if current.target in _SCORING:
                names.update(walked)
                break
            if len(walked) >= ROUTER_DEPTH or not current.args:
                break
            current = current.args[0]
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
