"""export_pte: a torch module -> one XNNPACK-delegated ExecuTorch program (.pte).

The steps: ``torch.export`` with the part's dynamic dims bounded (batch up to ``MAX_BATCH``,
every other varying dim from 1 up to its size in the example: an image side or a sequence
length), edgegate's ops rewritten into loop-free aten (`edgegate.ops.decompose`, which
ExecuTorch needs: it has no kernels for edgegate's custom ops) and splits into slices (see
``list_free_decompositions``), then ExecuTorch's own core-aten decomposition (which keeps
``linear`` whole for XNNPACK), XNNPACK partitioning and lowering, memory planning for the
upper bounds, and serialisation. What XNNPACK does not take runs on ExecuTorch's portable
kernels.

Dims: ExecuTorch plans memory for each dim's upper bound, so every dynamic dim is bounded.
Export traces with the batch at 2 (torch.export would fix a dim whose example size is 1) and
with ``backed_size_oblivious`` on, so a dim that reaches size 1 inside the network (a CNN's
last feature map at its smallest input) is not fixed to its example value either. When a plan
fails to lower, or its program does not run at a varied shape, the next plan keeps the batch
static (1), then every dim static; what was given up and why is returned for the manifest.

The program carries its own I/O record as a constant method (``edgegate_io``: input names,
symbolic shapes and upper bounds, output names), so a bare .pte still runs with its names.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgegate import __version__
from edgegate.atomic import atomic_write
from edgegate.dims import DimRange, shapes_for_signature
from edgegate.dims import dim_name as shared_dim_name
from edgegate.errors import (
    BadInput,
    EdgegateError,
    InternalError,
    ToolchainFailed,
    raised_in_edgegate,
)
from edgegate.libs import captured_stderr, import_optional, quiet_imports
from edgegate.manifest import InputSpec
from edgegate.models.checkpoint import export_failure
from edgegate.ops._parallel import MAX_PARALLEL_T
from edgegate.ops.decompose import decompose, remaining_edgegate_ops

MAX_BATCH = 8  # the programs' largest batch: memory is planned for it (runners split more)
IO_METHOD = "edgegate_io"  # constant method holding the program's I/O record (JSON)
SMOKE_TOLERANCE = 1e-3  # of the output scale: a varied-shape run that strays is a broken plan
QUANTIZED_SMOKE_TOLERANCE = 0.25  # INT8 programs run integer kernels the module only emulates


@dataclass(frozen=True)
class PteExport:
    """What ``export_pte`` wrote: the file, its inputs as the manifest records them, each
    dynamic dim's range, and the dims that had to stay static (with the reason)."""

    path: Path
    inputs: list[InputSpec]
    ranges: dict[str, dict[str, list[int]]]
    static_dims: list[str] = field(default_factory=list)
    delegated_nodes: int = 0
    portable_ops: dict[str, int] = field(default_factory=dict)
    static_reasons: dict[str, str] = field(default_factory=dict)  # "input.dim" -> why


@dataclass(frozen=True)
class _Plan:
    """Which dims of which inputs vary in one attempt."""

    name: str
    dynamic: tuple[tuple[int, ...], ...]


def dim_name(input_name: str, tensor: torch.Tensor, dim: int) -> str:
    """The symbolic name a dynamic dim gets in the manifest and the I/O record."""
    return shared_dim_name(input_name, tensor.dim(), tensor.is_floating_point(), dim)


def _plans(dynamic_dims: Sequence[Sequence[int]]) -> list[_Plan]:
    asked = tuple(tuple(sorted(d)) for d in dynamic_dims)
    no_batch = tuple(tuple(d for d in dims if d != 0) for dims in asked)
    plans = [_Plan("as asked", asked)]
    if no_batch != asked:
        plans.append(_Plan("static batch", no_batch))
    if any(no_batch):
        plans.append(_Plan("all static", tuple(() for _ in asked)))
    return plans


def _trace_args(args: tuple[torch.Tensor, ...], plan: _Plan) -> tuple[torch.Tensor, ...]:
    """The example, with the batch at 2 where it varies (1 would be specialised) and at 1
    where it is static (the deployed batch; runners split larger ones)."""
    out = []
    for a, dims in zip(args, plan.dynamic, strict=True):
        first = a[:1]
        out.append(torch.cat([first, first]) if 0 in dims else first)
    return tuple(out)


Bounds = dict[tuple[int, int], tuple[int, int]]  # (input, dim) -> declared (low, high)


def _bound(bounds: Bounds, a: torch.Tensor, index: int, d: int) -> tuple[int, int]:
    """A dim's declared range, else batch 1..MAX_BATCH and 1..the example's size."""
    return bounds.get((index, d), (1, MAX_BATCH if d == 0 else int(a.shape[d])))


def _dynamic_shapes(
    module: nn.Module, args: tuple[torch.Tensor, ...], plan: _Plan, bounds: Bounds
) -> Any:
    auto = torch.export.Dim.AUTO
    shapes = tuple(
        {d: auto(min=_bound(bounds, a, i, d)[0], max=_bound(bounds, a, i, d)[1]) for d in dims}
        for i, (a, dims) in enumerate(zip(args, plan.dynamic, strict=True))
    )
    return shapes_for_signature(module.forward, shapes)


@contextlib.contextmanager
def _size_oblivious() -> Iterator[None]:
    from torch.fx.experimental import _config as fx_config

    with fx_config.patch(backed_size_oblivious=True):
        yield


def scan_max_len(args: tuple[torch.Tensor, ...]) -> int:
    """The longest sequence the decomposed scans must cover: the largest non-batch dim of
    the example (a dim never grows past its example size here), within the forms' range."""
    sizes = [int(s) for a in args for s in a.shape[1:]] or [1]
    return max(1, min(MAX_PARALLEL_T, max(sizes)))


def _partitioner():
    """XNNPACK's partitioner, except that what XNNPACK turns into a reshape with more than one
    dynamic dim stays on the portable kernels: executorch 1.5.1's partitioner takes it, then
    XNNPACK's reshape (one dynamic dim at most) rejects it while lowering. That is an
    unsqueeze, and a 1-D convolution (lowered as unsqueeze, 2-D convolution, squeeze) of an
    input with a dynamic batch and length (RecurrentGemma's temporal conv). And a no-op
    clone of a tensor that has other users stays out too: XNNPACK's passes drop the clone,
    and a partition that returned both then returns one value twice, which its lowering
    refuses ("already in the inputs": RecurrentGemma's transposed conv output)."""
    with quiet_imports():
        from executorch.backends.xnnpack.partition.config import ALL_PARTITIONER_CONFIGS
        from executorch.backends.xnnpack.partition.config.gemm_configs import ConvolutionConfig
        from executorch.backends.xnnpack.partition.config.generic_node_configs import (
            CloneDimOrderConfig,
            UnsqueezeCopyConfig,
        )
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import (
            XnnpackPartitioner,
        )
    from torch.fx.experimental.symbolic_shapes import free_symbols

    def dynamic_dims(node) -> int:
        return sum(1 for size in node.meta["val"].shape if free_symbols(size))

    class OneDynamicDimUnsqueeze(UnsqueezeCopyConfig):
        def check_constraints(self, node, ep) -> bool:
            return super().check_constraints(node, ep) and dynamic_dims(node) <= 1

    class OneDynamicDimConv1d(ConvolutionConfig):
        def check_constraints(self, node, ep) -> bool:
            if not super().check_constraints(node, ep):
                return False
            one_d = node.args[1].meta["val"].dim() == 3
            return not one_d or max(dynamic_dims(node.args[0]), dynamic_dims(node)) <= 1

    class SoleUserClone(CloneDimOrderConfig):
        def check_constraints(self, node, ep) -> bool:
            return super().check_constraints(node, ep) and len(node.args[0].users) == 1

    swapped = {
        UnsqueezeCopyConfig: OneDynamicDimUnsqueeze,
        ConvolutionConfig: OneDynamicDimConv1d,
        CloneDimOrderConfig: SoleUserClone,
    }
    configs = [swapped.get(config, config) for config in ALL_PARTITIONER_CONFIGS]
    return XnnpackPartitioner(configs=configs)


def _is_quantized(module: nn.Module) -> bool:
    """A PT2E INT8 graph, or a module with torchao quantized weights (8da4w linears): its
    program runs integer kernels whose rounding the module only emulates."""
    if any("torchao" in type(p).__module__ for p in module.parameters()):
        return True
    graph = getattr(module, "graph", None)
    return graph is not None and any(
        "quantize_per" in str(node.target) for node in graph.nodes if node.op == "call_function"
    )


def _export(module: nn.Module, args: tuple[torch.Tensor, ...], plan: _Plan, bounds: Bounds):
    """torch.export under ``plan``; returns the program and the dims that really vary.

    A dim counts as varying when the program is symbolic in it *and* accepts an input that
    differs from the example in that dim alone: torch.export can keep a dim symbolic under a
    guard that admits one size only (a ViT's patch grid must match its position table), and
    the exported program checks its guards where the lowered one would not. Such a dim is
    fixed and the model exported again.
    """
    trace = _trace_args(args, plan)
    with _size_oblivious(), quiet_imports():
        program = torch.export.export(
            module, trace, dynamic_shapes=_dynamic_shapes(module, trace, plan, bounds)
        )
    dynamic = _dynamic_in(program, len(args))
    accepted = _probe(program, args, dynamic, bounds)
    if accepted == dynamic:
        return program, dynamic
    return _export(module, args, _Plan(plan.name, tuple(accepted)), bounds)


def _probe(program, args: tuple[torch.Tensor, ...], dynamic: list[tuple[int, ...]], bounds: Bounds):
    """The dims of ``dynamic`` in which the exported program takes another size (within
    their bounds). A batch is probed on every input whose batch varies at once: inputs that
    share it (a streaming step's tokens and states) carry a guard that their batches agree."""
    runnable = program.module()
    accepted = []
    for i, dims in enumerate(dynamic):
        kept = []
        for d in dims:
            feed = [a[:1] for a in args]
            low, high = _bound(bounds, args[i], i, d)
            size = min(3, high) if d == 0 else max(low, int(args[i].shape[d]) // 2 + 1)
            shape = list(feed[i].shape)
            if size == shape[d]:
                size = max(1, size - 1)
            if size == shape[d]:  # a dim of size 1 has no other size below its bound
                kept.append(d)
                continue
            index = [slice(None)] * feed[i].dim()
            index[d] = slice(0, min(size, shape[d]))
            piece = feed[i][tuple(index)]
            feed[i] = torch.cat([piece] * 3) if d == 0 else piece.contiguous()
            if d == 0:
                for j, other in enumerate(dynamic):
                    if j != i and 0 in other:
                        feed[j] = torch.cat([feed[j]] * 3)
            try:
                with torch.no_grad(), quiet_imports():
                    runnable(*feed)
            except Exception:
                continue
            kept.append(d)
        accepted.append(tuple(kept))
    return accepted


def _split_as_slices(self: torch.Tensor, split_sizes, dim: int = 0) -> list[torch.Tensor]:
    dim = dim % self.dim()
    pieces, start = [], 0
    for size in split_sizes:
        pieces.append(torch.ops.aten.slice.Tensor(self, dim, start, start + size))
        start = start + size
    return pieces


def _split_even_as_slices(self: torch.Tensor, split_size, dim: int = 0):
    length = self.shape[dim % self.dim()]
    if not isinstance(length, int) or not isinstance(split_size, int):
        return NotImplemented  # a symbolic count of pieces: left as it is
    sizes = [min(split_size, length - start) for start in range(0, length, split_size)]
    return _split_as_slices(self, sizes or [length], dim)


def _unbind_as_selects(self: torch.Tensor, dim: int = 0):
    length = self.shape[dim % self.dim()]
    if not isinstance(length, int):
        return NotImplemented
    return [torch.ops.aten.select.int(self, dim, i) for i in range(length)]


def list_free_decompositions() -> dict[object, Any]:
    """Splits and unbinds as slices and selects: no op that returns a list of tensors.

    ExecuTorch 1.5.1's edge verifier (``EdgeOpArgValidator``) takes the first tensor of a
    ``Tensor[]`` result for the list and calls ``len()`` on it, which guards that tensor's
    first dim to its traced size: a split of a ``[batch, seq, ...]`` activation (transformers'
    attention and gated-delta projections) then fixes the batch, and the program's every
    shape, at the example's. Slices return one tensor each (and XNNPACK takes them)."""
    aten = torch.ops.aten
    return {
        aten.split_with_sizes.default: _split_as_slices,
        aten.split.Tensor: _split_even_as_slices,
        aten.unbind.int: _unbind_as_selects,
    }


def _lower(program, args: tuple[torch.Tensor, ...], dynamic, record_for):
    """Decompose edgegate's ops, lower to XNNPACK and serialise, with ``record_for(dynamic)``
    as the program's I/O record. Returns (program manager, edge program manager).

    Only edgegate's ops and the splits are rewritten here: ExecuTorch decomposes the rest
    itself and keeps what XNNPACK takes whole (``linear``). A full core-aten pass first would
    cost one more retrace and hand XNNPACK matmuls to fuse back, some of which it cannot (a
    linear of a transposed input becomes a bmm with the weight expanded per batch)."""
    with quiet_imports():
        from executorch.exir import to_edge_transform_and_lower
    with _size_oblivious(), quiet_imports():
        program = decompose(
            program, scan_max_len(args), core_aten=False, extra=list_free_decompositions()
        )
        left = remaining_edgegate_ops(program)
        if left:
            raise BadInput(f"edgegate ops without a loop-free form: {', '.join(left)}")
        edge = to_edge_transform_and_lower(
            program,
            partitioner=[_partitioner()],
            constant_methods={IO_METHOD: json.dumps(record_for(dynamic))},
        )
        return edge.to_executorch(), edge


def _dynamic_in(program, count: int) -> list[tuple[int, ...]]:
    """Which dims of the first ``count`` user inputs are symbolic in an exported program."""
    names = set(program.graph_signature.user_inputs)
    placeholders = [n for n in program.graph.nodes if n.op == "placeholder" and n.name in names]
    ranges = {str(symbol): r for symbol, r in program.range_constraints.items()}

    def varies(size) -> bool:
        if isinstance(size, int):
            return False
        known = ranges.get(str(size.node.expr))
        return known is None or known.lower != known.upper

    return [
        tuple(d for d, size in enumerate(node.meta["val"].shape) if varies(size))
        for node in placeholders[:count]
    ]


def _op_name(target) -> str:
    schema = getattr(target, "_schema", None)
    if schema is not None:
        return f"{schema.name}.{schema.overload_name or 'default'}"
    return getattr(target, "__name__", str(target))


def _count_nodes(edge) -> tuple[int, dict[str, int]]:
    """(XNNPACK delegate calls, {op: count} of the compute left to the portable kernels).
    Memory planning's allocations, tuple accessors and size queries are not compute."""
    calls = [n for n in edge.exported_program().graph.nodes if n.op == "call_function"]
    names = [_op_name(n.target) for n in calls]
    delegated = sum(1 for name in names if "call_delegate" in name)
    skip = ("call_delegate", "alloc", "getitem", "sym_size")
    portable: dict[str, int] = {}
    for name in names:
        if not any(word in name for word in skip):
            portable[name] = portable.get(name, 0) + 1
    return delegated, dict(sorted(portable.items()))


def _varied(args: tuple[torch.Tensor, ...], dynamic: list[tuple[int, ...]]):
    """Inputs at a shape other than the traced one in every dynamic dim (batch 2, half
    lengths), from the example's own values."""
    out = []
    for a, dims in zip(args, dynamic, strict=True):
        index = []
        for d, size in enumerate(a.shape):
            if d == 0:
                index.append(slice(0, 1))
            elif d in dims and size > 1:
                index.append(slice(0, size // 2 + 1))
            else:
                index.append(slice(None))
        piece = a[tuple(index)].contiguous()
        out.append(torch.cat([piece, piece]) if 0 in dims else piece)
    return tuple(out)


def _smoke(
    buffer: bytes, module: nn.Module, args: tuple[torch.Tensor, ...], dynamic
) -> tuple[str, list[list[int]]]:
    """Run the program at the example and at a varied shape against the module: '' when both
    agree (within a loose tolerance), else why not. Also returns the planned upper bounds."""
    runtime = import_optional("executorch.runtime")
    tolerance = QUANTIZED_SMOKE_TOLERANCE if _is_quantized(module) else SMOKE_TOLERANCE
    bounds: list[list[int]] = []
    problem, failure = "", None
    with captured_stderr() as log:
        try:
            # the Program is held while its method runs: it owns the bytes the method reads
            # (a method of a temporary Program runs on freed memory: garbage shapes)
            loaded = runtime.Runtime.get().load_program(buffer)
            method = loaded.load_method("forward")
            meta = method.metadata
            bounds = [list(meta.input_tensor_meta(i).sizes()) for i in range(meta.num_inputs())]
            for feed in (tuple(a[:1] for a in args), _varied(args, dynamic)):
                problem = f"it fails at input shapes {[list(a.shape) for a in feed]}"
                got = method.execute(feed)
                with torch.no_grad():
                    want = module(*feed)
                want = want if isinstance(want, tuple | list) else (want,)
                for g, w in zip(got, want, strict=False):
                    scale = max(1.0, float(w.abs().max())) if w.numel() else 1.0
                    if tuple(g.shape) != tuple(w.shape) or not torch.allclose(
                        g.float(), w.float(), atol=tolerance * scale, rtol=0
                    ):
                        shapes = [list(a.shape) for a in feed]
                        return f"its outputs stray from PyTorch at input shapes {shapes}", bounds
            problem = ""
        except Exception as exc:  # the runtime's own error types; its log says more
            failure = exc
            problem = problem or "the program does not load"
    if failure is not None:
        return f"{problem} ({log.last_line() or _summary(failure)})", bounds
    return "", bounds


def export_pte(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    path: str | os.PathLike[str],
    *,
    input_names: list[str],
    output_names: list[str],
    dynamic_dims: Sequence[Sequence[int]],
    metadata: dict[str, str] | None = None,
    ranges: Sequence[DimRange] = (),
) -> PteExport:
    """Lower ``module`` to an XNNPACK-delegated .pte at ``path`` (written atomically), trying
    the asked dynamic dims first and falling back to static ones (module docstring).
    ``ranges`` bound the dims they name (else batch 1..MAX_BATCH, others 1..example size)."""
    bounds: Bounds = {(r.index, r.axis): (r.low, r.high) for r in ranges}
    import_optional("executorch.exir")  # exit 3 before any work when ExecuTorch is missing
    module = module.eval()
    path = Path(path)
    failures: list[str] = []
    refused: Exception | None = None  # torch.export's error at the last plan tried
    lowering: Exception | None = None  # ExecuTorch's lowering error at the last plan tried
    for plan in _plans(dynamic_dims):
        try:
            exported, dynamic = _export(module, args, plan, bounds)
        except EdgegateError:
            raise
        except Exception as exc:
            failures.append(f"{plan.name}: torch.export failed ({_summary(exc)})")
            refused, lowering = exc, None
            continue
        shown = _as_traced(exported, args)  # what the manifest and the I/O record say

        def record_for(dynamic, shown=shown):
            return _io_record(shown, input_names, output_names, dynamic, metadata)

        try:
            program, edge = _lower(exported, args, dynamic, record_for)
        except EdgegateError:
            raise
        except Exception as exc:
            failures.append(f"{plan.name}: lowering failed ({_summary(exc)})")
            refused, lowering = None, exc
            continue
        problem, planned = _smoke(program.buffer, module, args, dynamic)
        if problem:
            failures.append(f"{plan.name}: {problem}")
            refused = lowering = None
            continue
        with atomic_write(path) as fh:
            program.write_to_file(fh)
        delegated, portable = _count_nodes(edge)
        given_up = _given_up(shown, input_names, dynamic_dims, plan, dynamic, failures)
        return PteExport(
            path,
            _input_specs(shown, input_names, dynamic),
            _ranges(args, input_names, dynamic, planned, bounds),
            [f"{label} fixed at {size}: {why}" for label, size, why in given_up],
            delegated,
            portable,
            {label: why for label, _, why in given_up},
        )
    raise _failure(module, failures[-1], refused, lowering) from refused or lowering


def _failure(
    module: nn.Module, last: str, refused: Exception | None, lowering: Exception | None
) -> Exception:
    """Whose fault the last plan's failure is: edgegate's code (InternalError); the model's
    when torch.export refused it (``export_failure``); else ExecuTorch's, whose lowering or
    runtime failed on a program torch.export made (ToolchainFailed, with its message)."""
    message = f"ExecuTorch export of {type(module).__name__} failed: {last}"
    if any(e is not None and raised_in_edgegate(e) for e in (refused, lowering)):
        return InternalError(f"{message} (in edgegate's code)")
    if refused is not None:
        return export_failure(module, message)
    return ToolchainFailed(message)


def _as_traced(program, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """Stand-ins for the example with every static dim at its size in ``program``: a static
    batch is 1 where the plan traced it so, 2 where torch.export fixed a batch-2 trace (the
    example's own batch is only what the range checks feed)."""
    names = set(program.graph_signature.user_inputs)
    placeholders = [n for n in program.graph.nodes if n.op == "placeholder" and n.name in names]
    out = []
    for a, node in zip(args, placeholders, strict=False):
        sizes = node.meta["val"].shape
        shape = [s if isinstance(s, int) else int(a.shape[d]) for d, s in enumerate(sizes)]
        out.append(torch.empty(shape, dtype=a.dtype))
    return tuple(out)


def _io_record(args, input_names, output_names, dynamic, metadata) -> dict[str, Any]:
    return {
        "edgegate_version": __version__,
        "inputs": [
            {
                "name": name,
                "shape": [
                    dim_name(name, a, d) if d in dims else int(s) for d, s in enumerate(a.shape)
                ],
                "dtype": str(a.dtype).removeprefix("torch."),
            }
            for name, a, dims in zip(input_names, args, dynamic, strict=True)
        ],
        "outputs": list(output_names),
        "metadata": dict(metadata or {}),
    }


def _input_specs(args, input_names, dynamic) -> list[InputSpec]:
    return [
        InputSpec(
            name,
            [dim_name(name, a, d) if d in dims else int(s) for d, s in enumerate(a.shape)],
            str(a.dtype).removeprefix("torch."),
        )
        for name, a, dims in zip(input_names, args, dynamic, strict=True)
    ]


def _ranges(args, input_names, dynamic, planned, bounds) -> dict[str, dict[str, list[int]]]:
    """[min, max] of every dynamic dim; the max is what the program planned memory for."""
    return {
        name: {dim_name(name, a, d): [_bound(bounds, a, i, d)[0], int(plan[d])] for d in dims}
        for i, (name, a, dims, plan) in enumerate(
            zip(input_names, args, dynamic, planned, strict=True)
        )
    }


def _given_up(args, input_names, asked, plan: _Plan, got, failures) -> list[tuple[str, int, str]]:
    """(input.dim, size, why) of each dim that was asked to vary but is static in the program:
    the model admits one size there, or an earlier plan failed to lower or to run."""
    notes = []
    for i, (name, a) in enumerate(zip(input_names, args, strict=True)):
        for d in sorted(set(asked[i]) - set(got[i])):
            if d in plan.dynamic[i]:
                why = "the model takes this size only (torch.export fixed it, or its guards do)"
            else:
                why = failures[-1] if failures else "not asked"
            size = int(a.shape[d])  # its size in the program
            notes.append((f"{name}.{dim_name(name, a, d)}", size, why))
    return notes


# the op namespaces a program may use: core aten (portable kernels or XNNPACK), primitives,
# and the quantize/dequantize ops of PT2E INT8; edgegate's own ops are decomposed first
TAKEN_NAMESPACES = ("aten", "prims", "quantized_decomposed")


def unsupported_ops(module: nn.Module, args: tuple[torch.Tensor, ...]) -> list[str]:
    """Ops one forward pass of ``module`` dispatches that no ExecuTorch kernel or edgegate
    decomposition takes (a user model's custom op, say): ``namespace::name`` each."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from edgegate.ops.decompose import edgegate_decompositions

    decomposed = {str(op.name()) for op in edgegate_decompositions()}
    seen: set[str] = set()

    class Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.add(str(func._schema.name))
            return func(*args, **(kwargs or {}))

    with torch.no_grad(), Recorder():
        module(*args)
    return sorted(
        name
        for name in seen
        if name.partition("::")[0] not in TAKEN_NAMESPACES and name not in decomposed
    )


def _summary(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(exc).__name__
