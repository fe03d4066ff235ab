"""An exported program (`.pt2`) as a plain FX graph that graph-mode quantization can work on.

``program.module()`` runs, but FX cannot trace it again (its inputs and outputs go through
pytree code), and its layers are aten calls on constant weights, where the graph passes of
`edgegate.quant.graph` look for modules: ``nn.Conv2d`` to quantize, a ``BatchNorm`` after a
conv to fold, a sigmoid module to give the fixed [0, 1] gate range. `plain_graph_module`
rewrites the graph into those terms and leaves every other aten op as it is:
- plain placeholders, one per input tensor, and a plain output (no pytree code);
- conv1d/conv2d/convolution, linear, and addmm/mm/matmul with a constant weight become
  ``nn.Conv1d`` / ``nn.Conv2d`` / ``nn.Linear`` submodules holding a copy of the weights;
- inference batch norm with constant statistics becomes an ``nn.BatchNorm1d/2d/3d``;
- sigmoid and hard-sigmoid (also in its core-aten form, ``clamp(x + 3, 0, 6) / 6``) become
  ``nn.Sigmoid`` / ``nn.Hardsigmoid``, softmax ``nn.Softmax`` and edgegate's clipped softmax
  ``ClippedSoftmax``: the gate outputs that get fixed [0, 1] ranges;
- edgegate's scan ops become the scan modules (`edgegate.models.blocks.scans`), so the
  projections feeding them stay float as in the eager model;
- relu, a plain add, matmul and bmm become the torch functions the placement rules match.

A program's guards (``_guards_fn``: the sizes it was exported for) stay in the graph, so the
plain module refuses the inputs the program refuses.
"""

from __future__ import annotations

import copy
import operator
import re
from collections.abc import Callable
from typing import Any

import torch
from torch import fx, nn
from torch.utils import _pytree as pytree

from edgegate.errors import BadInput
from edgegate.models.blocks.attention import ClippedSoftmax
from edgegate.models.blocks.scans import DeltaRuleScan, GLAScan, LinearScan
from edgegate.models.checkpoint import ExportedModule

aten = torch.ops.aten

# ops that only re-view a constant (linear's transposed weight); evaluated once, at rewrite
_CONSTANT_VIEWS = {
    aten.permute.default,
    aten.t.default,
    aten.transpose.int,
    aten.detach.default,
    aten.clone.default,
    aten.alias.default,
    aten._to_copy.default,
    aten.contiguous.default,
}
_CONVS = {
    aten.conv1d.default,
    aten.conv2d.default,
    aten.conv1d.padding,
    aten.conv2d.padding,
    aten.convolution.default,
}
_BATCH_NORMS = {
    aten.batch_norm.default,
    aten._native_batch_norm_legit_no_training.default,
    aten.native_batch_norm.default,
}
_GATES: dict[Any, type[nn.Module]] = {
    aten.sigmoid.default: nn.Sigmoid,
    aten.hardsigmoid.default: nn.Hardsigmoid,
}
# aten ops whose torch-level twin `edgegate.quant.graph` matches (ReLU fusion, residual adds,
# matmul inputs); same arithmetic
_FUNCTIONS: dict[Any, Callable[..., Any]] = {
    aten.relu.default: torch.relu,
    aten.matmul.default: torch.matmul,
    aten.bmm.default: torch.bmm,
}
_BATCH_NORM_TYPES = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}


class _ProgramLinearScan(LinearScan):
    """A program's ``gated_linear_scan`` call as the scan module the quantizer keeps float."""

    def forward(self, x, g, h0=None):  # noqa: ANN001, ANN201 - the op's own signature
        return torch.ops.edgegate.gated_linear_scan(x, g, h0)


class _ProgramGLAScan(GLAScan):
    """A program's ``gated_linear_attention`` call, with the scale it was exported with."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = float(scale)

    def forward(self, q, k, v, g, h0=None):  # noqa: ANN001, ANN201
        return torch.ops.edgegate.gated_linear_attention(q, k, v, g, h0, self.scale)


class _ProgramDeltaRuleScan(DeltaRuleScan):
    """A program's ``gated_delta_rule`` call, with the scale it was exported with."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = float(scale)

    def forward(self, q, k, v, g, beta, h0=None):  # noqa: ANN001, ANN201
        return torch.ops.edgegate.gated_delta_rule(q, k, v, g, beta, h0, self.scale)


def _edgegate_op(name: str) -> Any:
    """``torch.ops.edgegate.<name>.default``, None where the op is not registered."""
    return getattr(getattr(torch.ops.edgegate, name, None), "default", None)


# edgegate op -> (module builder from the bound arguments, names of the tensor arguments)
_EDGEGATE_MODULES: dict[Any, tuple[Callable[[dict[str, Any]], nn.Module], tuple[str, ...]]] = {
    _edgegate_op("gated_linear_scan"): (lambda a: _ProgramLinearScan(), ("x", "g", "h0")),
    _edgegate_op("gated_linear_attention"): (
        lambda a: _ProgramGLAScan(a["scale"]),
        ("q", "k", "v", "g", "h0"),
    ),
    _edgegate_op("gated_delta_rule"): (
        lambda a: _ProgramDeltaRuleScan(a["scale"]),
        ("q", "k", "v", "g", "beta", "h0"),
    ),
    _edgegate_op("clipped_softmax"): (
        lambda a: ClippedSoftmax(a["gamma"], a["zeta"], int(a["dim"])),
        ("x",),
    ),
}
_EDGEGATE_MODULES.pop(None, None)


PLAIN = "edgegate_plain_program"  # GraphModule.meta key of the graphs made here
# the GraphModule.meta entry whose attributes fx sets again on a deep copy
_PRESERVED = getattr(
    fx.graph_module, "_USER_PRESERVED_ATTRIBUTES_KEY", "_user_preserved_attributes"
)


def is_exported(model: nn.Module) -> bool:
    """Whether ``model`` is a loaded `.pt2` program (which FX cannot trace again) or the plain
    graph made of one (which needs no tracing)."""
    if isinstance(model, fx.GraphModule):
        return bool(model.meta.get(PLAIN))
    return isinstance(model, ExportedModule)


def plain_graph_module(model: nn.Module) -> fx.GraphModule:
    """The program inside ``model`` as a plain FX GraphModule that computes the same: layers
    as modules (weights copied), everything else as the program's aten calls. Given such a
    graph module already (whose layers a pass may have swapped), a new graph over its modules,
    as tracing it would give."""
    if isinstance(model, fx.GraphModule) and model.meta.get(PLAIN):
        return _marked(fx.GraphModule(model, copy.deepcopy(model.graph), "ExportedModule"), model)
    if not isinstance(model, ExportedModule):
        raise TypeError(f"{type(model).__name__} is not a loaded .pt2 program")
    inner = model.inner
    if not isinstance(inner, fx.GraphModule):
        raise BadInput(f"{type(inner).__name__} is not an exported program's graph module")
    _check_inputs(inner)
    graph = fx.Graph()
    flat_out = graph.graph_copy(inner.graph, {}, return_output_node=False)
    graph.output(_unflatten_output(inner, flat_out))
    rewriter = _Rewriter(inner, graph)
    rewriter.run()
    return _marked(rewriter.module(), model)


def _marked(graph_module: fx.GraphModule, source: nn.Module) -> fx.GraphModule:
    """``graph_module`` marked as a program's plain graph, with the batch bound of ``source``
    (the program's guards still hold it)."""
    graph_module.meta[PLAIN] = True
    graph_module.max_batch = getattr(source, "max_batch", None)
    # kept by deep copies too (GraphModule copies rebuild from the graph and drop attributes)
    graph_module.meta.setdefault(_PRESERVED, {})["max_batch"] = graph_module.max_batch
    return graph_module


def _check_inputs(inner: fx.GraphModule) -> None:
    """Plain placeholders take tensors one by one: a program whose forward takes a nested
    structure (a dict, a list of tensors) cannot be fed that way."""
    info = getattr(inner.graph._codegen, "pytree_info", None)
    if info is None or info.in_spec is None:
        return
    args_spec, kwargs_spec = info.in_spec.children()
    if not all(spec.is_leaf() for spec in [*args_spec.children(), *kwargs_spec.children()]):
        raise BadInput(
            "the exported program takes nested inputs (lists, dicts of tensors); edgegate "
            "feeds tensors one by one: export a forward that takes tensors"
        )


def _unflatten_output(inner: fx.GraphModule, flat: Any) -> Any:
    """The program's output structure (one tensor, a tuple, ...) as a plain output value."""
    info = getattr(inner.graph._codegen, "pytree_info", None)
    if info is None or info.out_spec is None:
        return flat
    spec = info.out_spec
    if not _plain_spec(spec):
        raise BadInput(
            f"the exported program returns a {spec.type.__name__}; edgegate takes tensors, "
            "tuples, lists or dicts of them"
        )
    leaves = list(flat) if isinstance(flat, (tuple, list)) else [flat]
    return pytree.tree_unflatten(leaves, spec)


def _plain_spec(spec: pytree.TreeSpec) -> bool:
    if spec.is_leaf():
        return True
    return spec.type in (tuple, list, dict) and all(_plain_spec(c) for c in spec.children())


class _Rewriter:
    """One pass over a copy of the program's graph; new modules get their final names last,
    clear of every attribute path the graph still reads."""

    def __init__(self, inner: fx.GraphModule, graph: fx.Graph) -> None:
        self.inner = inner
        self.graph = graph
        self.new: dict[fx.Node, nn.Module] = {}  # call_module node -> its module
        self.names: dict[fx.Node, str] = {}  # call_module node -> the name it asks for
        self._constants: dict[fx.Node, torch.Tensor | None] = {}

    def run(self) -> None:
        for node in list(self.graph.nodes):  # first, before its add becomes operator.add
            if node.op == "call_function" and node.target == aten.div.Tensor:
                source = _hardsigmoid_input(node)
                if source is not None:
                    self._replace(node, nn.Hardsigmoid(), (source,))
        for node in list(self.graph.nodes):
            if node.op != "call_function":
                continue
            if node.target in _CONVS:
                self._conv(node)
            elif node.target in (aten.linear.default, aten.addmm.default, aten.mm.default):
                self._linear(node)
            elif node.target == aten.matmul.default and not self._linear(node):
                node.target = torch.matmul
            elif node.target in _BATCH_NORMS:
                self._batch_norm(node)
            elif node.target in _GATES:
                self._replace(node, _GATES[node.target](), (node.args[0],))
            elif node.target in (aten._softmax.default, aten.softmax.int):
                self._softmax(node)
            elif node.target in _EDGEGATE_MODULES:
                build, inputs = _EDGEGATE_MODULES[node.target]
                bound = _bind(node)
                args = tuple(bound[name] for name in inputs)
                self._replace(node, build(bound), args)
            elif node.target == aten.add.Tensor and node.kwargs.get("alpha", 1) == 1:
                node.target, node.kwargs = operator.add, {}
            elif node.target in _FUNCTIONS:
                node.target = _FUNCTIONS[node.target]
        # unused weights and views of them go; the guards call and side effects stay
        self.graph.eliminate_dead_code(is_impure_node=self._kept)

    def _kept(self, node: fx.Node) -> bool:
        """What dead-code elimination keeps besides what is used: the program's own module
        calls (its guards), inputs, the output, and calls with side effects."""
        if node.op == "call_module":
            return node not in self.new
        return node.op in ("placeholder", "output") or (
            node.op == "call_function" and node.is_impure()
        )

    # --- constants ----------------------------------------------------------------------

    def constant(self, arg: Any) -> torch.Tensor | None:
        """The value of ``arg`` when it is a constant tensor (a weight, a buffer, or a view of
        one); None when it depends on an input or is computed otherwise."""
        if not isinstance(arg, fx.Node):
            return None
        if arg not in self._constants:
            self._constants[arg] = self._evaluate(arg)
        return self._constants[arg]

    def _evaluate(self, node: fx.Node) -> torch.Tensor | None:
        if node.op == "get_attr":
            value = _fetch(self.inner, str(node.target))
            return value.detach() if isinstance(value, torch.Tensor) else None
        if node.op != "call_function" or node.target not in _CONSTANT_VIEWS:
            return None
        values = {n: self.constant(n) for n in node.all_input_nodes}
        if not values or any(v is None for v in values.values()):
            return None
        args, kwargs = fx.node.map_arg((node.args, node.kwargs), lambda n: values[n])
        return node.target(*args, **kwargs)

    # --- layers -------------------------------------------------------------------------

    def _conv(self, node: fx.Node) -> None:
        bound = _bind(node)
        weight, bias = self.constant(bound["weight"]), bound.get("bias")
        bias_value = None if bias is None else self.constant(bias)
        if weight is None or (bias is not None and bias_value is None):
            return
        if bound.get("transposed") or any(bound.get("output_padding") or ()):
            return
        spatial = weight.dim() - 2
        cls = {1: nn.Conv1d, 2: nn.Conv2d}.get(spatial)
        if cls is None:
            return
        padding = bound["padding"]
        try:
            module = cls(
                weight.shape[1] * int(bound["groups"]),
                weight.shape[0],
                tuple(weight.shape[2:]),
                stride=_spread(bound["stride"], spatial),
                padding=padding if isinstance(padding, str) else _spread(padding, spatial),
                dilation=_spread(bound["dilation"], spatial),
                groups=int(bound["groups"]),
                bias=bias is not None,
            )
        except (ValueError, RuntimeError):  # e.g. padding="same" with a stride nn refuses
            return
        _load(module, weight, bias_value)
        self._replace(node, module, (bound["input"],), _owner(bound["weight"], node))

    def _linear(self, node: fx.Node) -> bool:
        """linear(x, W, b); addmm(b, x, W^T); mm(x, W^T); matmul(x, W^T) with a constant W."""
        bound = _bind(node)
        if node.target == aten.linear.default:
            source, weight_arg, bias = bound["input"], bound["weight"], bound.get("bias")
            weight = self.constant(weight_arg)
        elif node.target == aten.addmm.default:
            if bound.get("beta", 1) != 1 or bound.get("alpha", 1) != 1:
                return False
            source, weight_arg, bias = bound["mat1"], bound["mat2"], bound["self"]
            weight = _transposed(self.constant(weight_arg))
        else:  # mm, matmul
            source, bias = bound["self"], None
            weight_arg = bound["mat2"] if node.target == aten.mm.default else bound["other"]
            weight = _transposed(self.constant(weight_arg))
            if self.constant(source) is not None:
                return False
        bias_value = None if bias is None else self.constant(bias)
        if weight is None or weight.dim() != 2:
            return False
        if bias is not None and (bias_value is None or bias_value.shape != weight.shape[:1]):
            return False
        module = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        _load(module, weight, bias_value)
        self._replace(node, module, (source,), _owner(weight_arg, node))
        return True

    def _batch_norm(self, node: fx.Node) -> None:
        bound = _bind(node)
        if bound.get("training"):
            return
        stats = [self.constant(bound[k]) for k in ("running_mean", "running_var")]
        affine = {k: bound.get(k) for k in ("weight", "bias")}
        values = {k: None if v is None else self.constant(v) for k, v in affine.items()}
        if any(s is None for s in stats) or any(
            affine[k] is not None and values[k] is None for k in affine
        ):
            return
        rank = _rank(bound["input"])
        cls = _BATCH_NORM_TYPES.get(rank)
        if cls is None:
            return
        tuple_out = node.target != aten.batch_norm.default
        users = list(node.users)
        if tuple_out and any(u.target != operator.getitem or u.args[1] != 0 for u in users):
            return  # the saved statistics are read: not an inference batch norm
        mean, var = stats
        module = cls(mean.numel(), eps=float(bound["eps"]))
        with torch.no_grad():
            module.running_mean.copy_(mean)
            module.running_var.copy_(var)
            if values["weight"] is not None:
                module.weight.copy_(values["weight"])
            if values["bias"] is not None:
                module.bias.copy_(values["bias"])
        module.to(mean.dtype).eval()
        name = _owner(bound["running_mean"], node)
        if not tuple_out:
            self._replace(node, module, (bound["input"],), name)
            return
        call = self._replace(node, module, (bound["input"],), name, keep=True)
        for user in users:
            user.replace_all_uses_with(call)
            self.graph.erase_node(user)
        self.graph.erase_node(node)

    def _softmax(self, node: fx.Node) -> None:
        """A softmax that keeps its input's dtype (no ``dtype``, no half-to-float)."""
        bound = _bind(node)
        if bound.get("half_to_float") or bound.get("dtype") is not None:
            return
        module = nn.Softmax(dim=int(bound["dim"]))
        self._replace(node, module, (bound["self"],))

    def _replace(
        self,
        node: fx.Node,
        module: nn.Module,
        args: tuple[Any, ...],
        name: str | None = None,
        keep: bool = False,
    ) -> fx.Node:
        """A call_module in place of ``node``, asking for ``name`` (default: where the program
        called it, `_scope`); the final name is settled in `module`."""
        name = name or _scope(node, module)
        with self.graph.inserting_before(node):
            call = self.graph.call_module(name, args)
        call.meta = dict(node.meta)
        self.new[call] = module
        self.names[call] = name
        if not keep:
            node.replace_all_uses_with(call)
            self.graph.erase_node(node)
        return call

    # --- the module ---------------------------------------------------------------------

    def module(self) -> fx.GraphModule:
        """The GraphModule: the new layers under names clear of the attributes still read,
        every other attribute and submodule taken over from the program."""
        taken = {str(n.target) for n in self.graph.nodes if n.op in ("get_attr", "call_module")}
        taken -= {str(n.target) for n in self.new}
        root: dict[str, Any] = {}
        for node in self.graph.nodes:
            if node.op in ("get_attr", "call_module") and node not in self.new:
                # copies: quantization and QAT must leave the loaded program as it was
                root[str(node.target)] = copy.deepcopy(_fetch(self.inner, str(node.target)))
        used: set[str] = set()
        for call, module in self.new.items():
            name = _free_name(self.names[call], taken | used)
            used.add(name)
            call.target = name
            root[name] = module
        graph_module = fx.GraphModule(root, self.graph, "ExportedModule")
        graph_module.graph.lint()
        graph_module.recompile()
        return graph_module.eval()


def _hardsigmoid_input(div: fx.Node) -> fx.Node | None:
    """``x`` when ``div`` ends ``clamp(clamp(x + 3, 0), None, 6) / 6``, the core-aten form of
    a hard sigmoid (a program saved after ``run_decompositions()``); else None."""
    steps = (
        (aten.clamp.default, (None, 6)),
        (aten.clamp.default, (0,)),
        (aten.add.Tensor, (3,)),
    )
    if tuple(div.args[1:]) != (6,) or div.kwargs:
        return None
    node = div.args[0]
    for target, rest in steps:
        if not isinstance(node, fx.Node) or node.target != target or len(node.users) != 1:
            return None
        if tuple(node.args[1:]) != rest or node.kwargs:
            return None
        node = node.args[0]
    return node if isinstance(node, fx.Node) else None


def _scope(node: fx.Node, module: nn.Module) -> str:
    """The path of the module that called ``node`` when it is that kind of module (a user's
    ``nn.Sigmoid``, a zoo ``GLAScan``), else ``<that path>.<node name>``; the node's name
    where the program recorded no module."""
    stack = node.meta.get("nn_module_stack") or {}
    path, kind = list(stack.values())[-1] if stack else ("", "")
    path = _clean_path(path)
    if not path:
        return node.name
    kind_name = getattr(kind, "__name__", str(kind).rsplit(".", 1)[-1])
    if kind_name in {cls.__name__ for cls in type(module).__mro__}:
        return path
    return f"{path}.{node.name}"


def _bind(node: fx.Node) -> dict[str, Any]:
    """``node``'s arguments by name, defaults filled in from the op's schema."""
    schema = node.target._schema
    bound: dict[str, Any] = {}
    for index, argument in enumerate(schema.arguments):
        if index < len(node.args):
            bound[argument.name] = node.args[index]
        elif argument.name in node.kwargs:
            bound[argument.name] = node.kwargs[argument.name]
        elif argument.has_default_value():
            bound[argument.name] = argument.default_value
    return bound


def _spread(value: Any, n: int) -> tuple[int, ...]:
    values = [int(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
    return tuple(values * n) if len(values) == 1 else tuple(values)


def _transposed(weight: torch.Tensor | None) -> torch.Tensor | None:
    return None if weight is None or weight.dim() != 2 else weight.t()


def _load(module: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    """Copies of the program's weights into ``module`` (in their dtype)."""
    module.to(weight.dtype)
    with torch.no_grad():
        module.weight.copy_(weight)
        if bias is not None:
            module.bias.copy_(bias)


def _rank(node: Any) -> int | None:
    value = node.meta.get("val") if isinstance(node, fx.Node) else None
    return value.dim() if isinstance(value, torch.Tensor) else None


def _owner(weight: Any, node: fx.Node) -> str:
    """A layer's name: the path of the module its weight belonged to (``features.0`` for
    ``features.0.weight``), else the node's name."""
    if isinstance(weight, fx.Node):
        source = weight
        while source.op == "call_function" and source.args and isinstance(source.args[0], fx.Node):
            source = source.args[0]  # through a transposed view of the weight
        if source.op == "get_attr":
            path = str(source.target).rpartition(".")[0]
            if _clean_path(path):
                return path
    return node.name


def _clean_path(path: str) -> str:
    """``path`` when it is a dotted module path (``L['self'].se`` from a strict export: '')."""
    return path if re.fullmatch(r"[A-Za-z_]\w*(\.\w+)*", path or "") else ""


def _free_name(name: str, taken: set[str]) -> str:
    """``name``, or ``name_1``, ``name_2``...: neither an attribute path still read nor a prefix
    of one (a layer named ``conv`` would shadow a read of ``conv.weight``)."""

    def clashes(candidate: str) -> bool:
        return any(
            t == candidate or t.startswith(candidate + ".") or candidate.startswith(t + ".")
            for t in taken
        )

    candidate, count = name, 0
    while clashes(candidate):
        count += 1
        candidate = f"{name}_{count}"
    return candidate


def _fetch(root: nn.Module, target: str) -> Any:
    value: Any = root
    for part in target.split("."):
        value = getattr(value, part)
    return value
