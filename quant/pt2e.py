"""INT8 for ExecuTorch's XNNPACK backend: PT2E with XNNPACK's own quantizer, plus the gate rules.

The scheme is XNNPACK's (design.md §4 "executorch"): ``XNNPACKQuantizer`` with
``get_symmetric_quantization_config(is_per_channel=True)``, i.e. int8 weights symmetric per
output channel in [-127, 127], int8 affine activations per tensor, int32 bias; it places
quantizers around the ops XNNPACK runs in integers (convs, linears, adds, muls, concatenations,
pools). edgegate adds what that quantizer cannot know about gated networks:

- Gate outputs (every sigmoid and hard-sigmoid whose input depends on the model input: SE
  gates, attention and output gates, the GC decision) get a fixed [0, 1] quantization, scale
  1/255 and zero point -128, so that 0 and 1 are the codes -128 and 127 exactly. It is never
  observed: calibration data cannot move it. Softmax and clipped-softmax outputs get the same
  fixed range on every edge that a quantized op consumes.
- The scan region stays float: every node on a path from a scan's inputs back to the
  projections that feed it (those projections included), hence the log-decay gates, beta and
  the scan itself, whose states would compound the error of quantized inputs over time. After
  ``edgegate.ops.decompose`` that region is plain aten with no quantize/dequantize in it.
  ``quantize_scan_inputs`` quantizes the projections too, as for the other profiles.
- Integer-friendly forms (``edgegate.quant.pt2e_forms``): a hard-sigmoid gate read straight
  off a convolution or linear layer (the SE gate of every MobileNetV3) is folded into that
  layer, the gate becoming a clamp to [0, 1] that XNNPACK fuses into the layer's int8
  kernel, its output on the fixed grid; an image stem (a convolution reading a model input of
  at most 4 channels) stays float, as XNNPACK's int8 layout transpose of the input costs more
  than its int8 convolution saves.
- Calibration methods: ``minmax`` observes running min/max; ``mse`` uses PyTorch's histogram
  observer, which searches the range that minimises the quantization error (XNNPACK's own
  default). ``percentile`` has no PT2E observer here and is refused.

The result is the converted PT2E model: quantize/dequantize nodes around float ops, which
PyTorch runs as the reference the lowered program is judged against, and which ExecuTorch
lowers to XNNPACK's integer kernels.
"""

from __future__ import annotations

import dataclasses
import os
import types
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import fx, nn

from edgegate.atomic import atomic_write
from edgegate.dims import shapes_for_signature
from edgegate.errors import BadInput
from edgegate.libs import import_optional, quiet_imports
from edgegate.ops.decompose import SCAN_OP_NAMES
from edgegate.quant.exported import is_exported, plain_graph_module
from edgegate.quant.pt2e_forms import FOLDED_GATE, fold_hardsigmoid_gates, image_stems
from edgegate.recognise.graph import depends_on_input

# 0 -> -128 and 1 -> 127, both exact; the grid of design.md's "u8 scale 1/255" in int8
GATE_SCALE = 1.0 / 255.0
GATE_ZERO_POINT = -128
METHODS = ("minmax", "mse")
REFERENCE_FORMAT = "edgegate-pt2e-int8/1"

_GATE_OPS = ("aten.sigmoid.default", "aten.hardsigmoid.default")
_SOFTMAX_OPS = ("aten.softmax.int", "aten._softmax.default", "edgegate.clipped_softmax.default")
_COMPUTE_OPS = (
    "aten.linear.default",
    "aten.conv1d.default",
    "aten.conv2d.default",
    "aten.matmul.default",
    "aten.bmm.default",
)
_SCAN_OPS = tuple(f"edgegate.{name}.default" for name in SCAN_OP_NAMES)


def check_method(method: str) -> None:
    """BadInput for a calibration method PT2E has no observer for here."""
    if method not in METHODS:
        raise BadInput(
            f"calibration method '{method}' is not available for the executorch profile "
            f"(PT2E observers): use {' or '.join(METHODS)}"
        )


def _target(node: fx.Node) -> str:
    return str(node.target) if node.op == "call_function" else ""


def scan_region(graph: fx.Graph) -> set[fx.Node]:
    """The scans and every node between them and the compute ops that feed them, inclusive."""
    region: set[fx.Node] = set()
    for scan in (n for n in graph.nodes if _target(n) in _SCAN_OPS):
        region.add(scan)
        feeding: list[fx.Node] = []
        stack = list(scan.all_input_nodes)
        while stack:
            node = stack.pop()
            if node in region or node.op in ("placeholder", "get_attr", "output"):
                continue
            region.add(node)
            if _target(node) in _COMPUTE_OPS or _target(node) in _SCAN_OPS:
                feeding.append(node)
                continue  # a feeding projection (or an earlier scan's output): stop here
            stack.extend(node.all_input_nodes)
        region |= _block_tail(scan, feeding)
    return region


def _module_paths(node: fx.Node) -> list[str]:
    return [str(entry[0]) for entry in (node.meta.get("nn_module_stack") or {}).values()]


def _block_tail(scan: fx.Node, feeding: list[fx.Node]) -> set[fx.Node]:
    """What the scan's block does with its output before the block's next compute op: the
    gated output norm of Gated DeltaNet / Mamba2 / GLA blocks (``rmsnorm(o) * silu(z)``).

    Its rsqrt and products see the scan's unnormalised output, whose range an 8-bit grid
    cannot hold (fine-tuned tiny Qwen3-Next, 96 test windows: perplexity +10.7 % under XNNPACK
    with it quantized, +2.9 % without); the brevitas profiles leave it float too. Bounded
    by the block, so the residual stream after it is quantized as before."""
    projected = {path for node in feeding for path in _module_paths(node)}
    blocks = [path for path in _module_paths(scan) if path in projected]
    if not blocks:
        return set()
    block = blocks[-1]  # the innermost module holding both the projections and the scan
    tail: set[fx.Node] = set()
    stack = list(scan.users)
    while stack:
        node = stack.pop()
        if node in tail or node.op != "call_function" or _target(node) in _COMPUTE_OPS:
            continue
        if block not in _module_paths(node):
            continue
        tail.add(node)
        stack.extend(node.users)
    return tail


def gate_outputs(graph: fx.Graph, region: Iterable[fx.Node] = ()) -> list[fx.Node]:
    """Sigmoid and hard-sigmoid nodes that gate something: input-dependent, outside scans."""
    excluded = set(region)
    return [
        n
        for n in graph.nodes
        if (_target(n) in _GATE_OPS or n.meta.get(FOLDED_GATE))
        and n not in excluded
        and depends_on_input(n)
    ]


def _unit_range_sources(graph: fx.Graph, region: set[fx.Node]) -> set[fx.Node]:
    """Gate and softmax outputs outside the scans, with the views that only pass them on."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer_utils import (
        _is_share_obs_or_fq_op,
    )

    sources = set(gate_outputs(graph, region))
    sources |= {n for n in graph.nodes if _target(n) in _SOFTMAX_OPS and n not in region}
    for node in graph.nodes:  # topological order: a chain of views joins its source
        if (
            node.op == "call_function"
            and _is_share_obs_or_fq_op(node.target)
            and node.args
            and node.args[0] in sources
        ):
            sources.add(node)
    return sources


def unit_range_spec():
    """The fixed [0, 1] quantization spec of gate outputs (never observed)."""
    with quiet_imports():
        from torchao.quantization.pt2e.quantizer import FixedQParamsQuantizationSpec
    return FixedQParamsQuantizationSpec(
        dtype=torch.int8,
        scale=GATE_SCALE,
        zero_point=GATE_ZERO_POINT,
        quant_min=-128,
        quant_max=127,
        qscheme=torch.per_tensor_affine,
    )


def _quantization_config(method: str):
    """XNNPACK's symmetric per-channel config, with the activation observer ``method`` picks."""
    with quiet_imports():
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            get_symmetric_quantization_config,
        )
        from torchao.quantization.pt2e import MinMaxObserver

    config = get_symmetric_quantization_config(is_per_channel=True)
    if method == "mse":
        return config  # XNNPACK's own HistogramObserver
    act = dataclasses.replace(
        config.input_activation, observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2**-12)
    )
    return dataclasses.replace(config, input_activation=act, output_activation=act)


def keep_integer_scalars(model: fx.GraphModule) -> fx.GraphModule:
    """Undo one side effect of XNNPACK's annotation pre-pass on integer arithmetic.

    That pass turns every scalar operand of ``add``/``mul`` into a float32 buffer, so the
    integer position ids a transformers LM computes (``arange(T) + past_seen_tokens``) are
    promoted to float, and the indexing that follows fails during calibration. Such a buffer
    next to an integer tensor gets that tensor's dtype back (the value was an int)."""
    targets = (torch.ops.aten.add.Tensor, torch.ops.aten.mul.Tensor)
    for node in model.graph.nodes:
        if node.op != "call_function" or node.target not in targets:
            continue
        values = [a.meta.get("val") for a in node.args if isinstance(a, fx.Node)]
        integer = [
            v for v in values if isinstance(v, torch.Tensor) and not v.dtype.is_floating_point
        ]
        if not integer:
            continue
        for arg in node.args:
            if not (isinstance(arg, fx.Node) and arg.op == "get_attr"):
                continue
            buffer = getattr(model, str(arg.target), None)
            if (
                isinstance(buffer, torch.Tensor)
                and buffer.dim() == 0
                and buffer.is_floating_point()
            ):
                value = buffer.item()
                if value != int(value):
                    continue
                fixed = torch.tensor(int(value), dtype=integer[0].dtype)
                setattr(model, str(arg.target), fixed)
                fake_mode = arg.meta["val"].fake_mode
                arg.meta["val"] = fake_mode.from_tensor(fixed, static_shapes=True)
    model.recompile()
    return model


def _xnnpack_quantizer_class():
    """ExecuTorch's XNNPACK quantizer, keeping integer arithmetic integer."""
    with quiet_imports():
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer

    class IntegerSafeXNNPACKQuantizer(XNNPACKQuantizer):
        def transform_for_annotation(self, model: fx.GraphModule) -> fx.GraphModule:
            return keep_integer_scalars(super().transform_for_annotation(model))

    return IntegerSafeXNNPACKQuantizer


def plain_quantizer(method: str = "minmax"):
    """XNNPACK's quantizer as ExecuTorch ships it, with the same config edgegate starts from
    (and integer scalars kept integer, without which no transformers LM calibrates)."""
    check_method(method)
    quantizer = _xnnpack_quantizer_class()()
    quantizer.set_global(_quantization_config(method))
    return quantizer


def gate_aware_quantizer(method: str = "minmax", quantize_scan_inputs: bool = False):
    """An ``XNNPACKQuantizer`` that also applies edgegate's gate and scan rules."""
    check_method(method)
    XNNPACKQuantizer = _xnnpack_quantizer_class()  # noqa: N806
    with quiet_imports():
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer_utils import (
            propagate_annotation,
        )
        from torchao.quantization.pt2e.quantizer import QuantizationAnnotation
        from torchao.quantization.pt2e.quantizer.quantizer import Q_ANNOTATION_KEY

    class GateAwareXNNPACKQuantizer(XNNPACKQuantizer):
        def transform_for_annotation(self, model: fx.GraphModule) -> fx.GraphModule:
            model = super().transform_for_annotation(model)
            fold_hardsigmoid_gates(model, gate_outputs(model.graph, scan_region(model.graph)))
            return model

        def annotate(self, model: fx.GraphModule) -> fx.GraphModule:
            graph = model.graph
            region = set() if quantize_scan_inputs else scan_region(graph)
            self.set_filter_function(lambda node: node not in region)
            self._annotate_for_quantization_config(model)
            for stem in image_stems(graph):  # float input and weights, quantized output
                annotation = stem.meta.get(Q_ANNOTATION_KEY)
                if annotation is not None:
                    annotation.input_qspec_map = {}
            unit = unit_range_spec()
            for gate in gate_outputs(graph, scan_region(graph)):
                if gate.meta.get(FOLDED_GATE):
                    # the layer's int32 sums go through the fused clamp straight onto the
                    # gate grid: no quantizer between the layer and the clamp
                    layer = gate.args[0].meta.get(Q_ANNOTATION_KEY)
                    if layer is not None:
                        layer.output_qspec = None
                existing = gate.meta.get(Q_ANNOTATION_KEY)
                if existing is not None:
                    existing.output_qspec = unit
                else:
                    gate.meta[Q_ANNOTATION_KEY] = QuantizationAnnotation(
                        output_qspec=unit, _annotated=True
                    )
            propagate_annotation(model)
            sources = _unit_range_sources(graph, scan_region(graph))
            for node in graph.nodes:  # every quantized use of a [0, 1] value: the fixed range
                annotation = node.meta.get(Q_ANNOTATION_KEY)
                if annotation is None:
                    continue
                for arg in list(annotation.input_qspec_map):
                    if arg in sources:
                        annotation.input_qspec_map[arg] = unit
            return model

    quantizer = GateAwareXNNPACKQuantizer()
    quantizer.set_global(_quantization_config(method))
    return quantizer


def _free_batch_dims(args: Sequence[torch.Tensor], dynamic_dims: Sequence[Sequence[int]]):
    """Dynamic shapes for graphs torch runs (calibration, the reference): the batch free (a
    test split runs in one call), every other dynamic dim from 1 to its example size, as in
    the lowered program."""
    auto = torch.export.Dim.AUTO
    return tuple(
        {d: auto(min=1) if d == 0 else auto(min=1, max=int(a.shape[d])) for d in dims}
        for a, dims in zip(args, dynamic_dims, strict=True)
    )


def _capture(module: nn.Module, args: tuple[torch.Tensor, ...], dynamic_dims):
    """``module`` as an exported graph with a free batch (traced at 2, so it stays free)."""
    from torch.fx.experimental import _config as fx_config

    pairs = zip(args, dynamic_dims, strict=True)
    trace = tuple(torch.cat([a[:1], a[:1]]) if 0 in dims else a for a, dims in pairs)
    with fx_config.patch(backed_size_oblivious=True), quiet_imports():
        shapes = shapes_for_signature(module.forward, _free_batch_dims(trace, dynamic_dims))
        return torch.export.export(module.eval(), trace, dynamic_shapes=shapes)


def quantize_xnnpack(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    dynamic_dims: Sequence[Sequence[int]],
    batches: Iterable[tuple[torch.Tensor, ...]],
    *,
    method: str = "minmax",
    quantize_scan_inputs: bool = False,
    gate_rules: bool = True,
) -> fx.GraphModule:
    """PTQ ``module`` for XNNPACK: capture, annotate (gate-aware), calibrate on ``batches``,
    convert. Returns the converted PT2E model (quantize/dequantize around float ops).

    ``gate_rules=False`` is XNNPACK's own flow, without edgegate's rules: what a user of
    ExecuTorch gets by default, for benchmarks to compare against."""
    quantizer = (
        gate_aware_quantizer(method, quantize_scan_inputs)
        if gate_rules
        else plain_quantizer(method)
    )
    import_optional("torchao")
    with quiet_imports():
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    if is_exported(module):
        # a .pt2's re-export calls aten.linear with no nn.Linear behind it, and XNNPACK's
        # partitioner finds a quantized linear (its transposed weight DQ) by that source:
        # without it the weight's dequantize stays outside the delegate and lowering fails
        module = plain_graph_module(module)
    graph_module = _capture(module, args, dynamic_dims).module()
    with quiet_imports():
        prepared = prepare_pt2e(graph_module, quantizer)
    with torch.no_grad():
        for batch in batches:
            prepared(*batch)
    with quiet_imports():
        return _evaluable(convert_pt2e(prepared))


def _evaluable(module: fx.GraphModule) -> fx.GraphModule:
    """An exported model whose ``.eval()`` returns it, as every module edgegate runs does.

    Exported graphs refuse ``train()``/``eval()``: the mode was fixed when they were traced,
    and a PTQ graph is traced in eval mode. (torchao's own allowance rewrites dropout and
    batch-norm patterns and returns None, which would break ``module.eval()`` chains.)
    """

    def mode(self, mode: bool = True):
        if mode:
            raise BadInput("a converted PT2E INT8 model is inference-only: it cannot train")
        return self

    module.train = types.MethodType(mode, module)
    module.eval = types.MethodType(lambda self: self, module)
    return module


def quantize_nodes(graph_module: fx.GraphModule) -> list[fx.Node]:
    """The per-tensor activation quantize nodes of a converted model (weights excluded)."""
    return [
        n
        for n in graph_module.graph.nodes
        if _target(n).startswith("quantized_decomposed.quantize_per_tensor")
    ]


def quantized_inputs(node: fx.Node) -> bool:
    """Whether any input of ``node`` arrives through a dequantize (i.e. was quantized)."""
    return any(
        _target(a).startswith("quantized_decomposed.dequantize") for a in node.all_input_nodes
    )


def save_reference(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    dynamic_dims: Sequence[Sequence[int]],
    path: str | os.PathLike[str],
) -> Path:
    """Write the converted model as a torch.export program (atomically), free in the batch,
    so ``validate`` can run the same reference later."""
    path = Path(path)
    program = _capture(module, args, dynamic_dims)
    with atomic_write(path) as fh:
        torch.export.save(program, fh, extra_files={"format": REFERENCE_FORMAT})
    return path


def load_reference(path: str | os.PathLike[str]) -> nn.Module:
    """The reference written by ``save_reference``, as a module torch runs."""
    import_optional("torchao.quantization.pt2e.quantize_pt2e")  # registers the Q/DQ ops
    extra = {"format": ""}
    try:
        with quiet_imports():
            program = torch.export.load(os.fspath(path), extra_files=extra)
    except Exception as exc:
        raise BadInput(f"cannot read the INT8 reference '{path}' ({type(exc).__name__})") from None
    if extra["format"] != REFERENCE_FORMAT:
        raise BadInput(f"'{path}' is not an edgegate PT2E INT8 reference ({REFERENCE_FORMAT})")
    return _evaluable(program.module())
