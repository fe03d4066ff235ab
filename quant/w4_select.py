"""Which linear layers W4 quantizes and which stay higher precision, read off the traced graph.

Higher precision, found by where a layer's output goes (never by its name, so ``hf:`` models
and user models are treated alike):
- scan gate projections: the layers feeding a scan's log-decay (``g``) or ``beta`` input. A
  decay error compounds over every later step of the state (design §4);
- output-gate projections: the layers feeding a recognised gate (a sigmoid that multiplies a
  tensor: gated attention's and the scan mixers' output gates). The gate decides how much of
  a value passes, and 4-bit noise near its threshold flips that decision.
A private low-rank chain (``Linear -> Linear`` whose middle feeds nothing else) is followed to
its first layer: both halves compute the gate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import fx, nn

from edgegate.errors import BadInput
from edgegate.models.blocks.scans import DeltaRuleScan, GLAScan, LinearScan
from edgegate.quant.exported import is_exported
from edgegate.quant.graph import trace
from edgegate.recognise import recognise
from edgegate.recognise.graph import SCAN_TYPES, plain_layer

# forward() positions of each scan's gate inputs: log decay g, and beta (delta rule)
SCAN_GATE_ARGS: dict[type, dict[int, str]] = {
    LinearScan: {1: "decay"},
    GLAScan: {3: "decay"},
    DeltaRuleScan: {3: "decay", 4: "beta"},
}


@dataclass(frozen=True)
class W4Plan:
    """The linears W4 rounds (in graph order) and those kept higher precision, with why."""

    quantized: tuple[str, ...]
    kept: dict[str, str] = field(default_factory=dict)
    in_features: dict[str, int] = field(default_factory=dict)

    def check(self, group_size: int, model_name: str = "the model") -> None:
        """BadInput when there is nothing to quantize or a group would straddle rows."""
        if not self.quantized:
            extra = f" (the {len(self.kept)} it has stay higher precision)" if self.kept else ""
            raise BadInput(
                f"--scheme w4 finds no linear layer to quantize in {model_name}{extra}: W4 is "
                "weight-only INT4 for matmuls (nn.Linear); quantize convolutional models with "
                "--scheme int8"
            )
        for name in self.quantized:
            features = self.in_features[name]
            if features % group_size:
                raise BadInput(
                    f"--group-size {group_size} does not divide the {features} input features "
                    f"of layer '{name}'"
                )


def _layers_behind(starts: list[fx.Node], modules: dict[str, nn.Module]) -> set[str]:
    """Compute layers whose outputs reach ``starts`` through ops private to that path: the
    walk stops at the first compute layer on each path, at shared tensors and at inputs."""
    found: set[str] = set()
    stack, seen = list(starts), set()
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        module = modules.get(node.target) if node.op == "call_module" else None
        if module is not None and plain_layer(module) is not None:
            found.add(str(node.target))
            source = node.args[0] if node.args else None
            if isinstance(source, fx.Node) and len(source.users) == 1:
                stack.append(source)  # a low-rank chain: its first half is the gate's too
            continue
        if isinstance(module, SCAN_TYPES) or node.op in ("placeholder", "get_attr"):
            continue
        if node not in starts and len(node.users) > 1:
            continue  # a tensor others read too: not the gate's own computation
        stack.extend(node.all_input_nodes)
    return found


def plan_w4(model: nn.Module) -> W4Plan:
    """Trace ``model`` and sort its ``nn.Linear`` layers into W4 and kept."""
    if is_exported(model):
        raise BadInput(
            "--scheme w4 needs a model FX can trace (edgegate's zoo, a module factory); "
            "a program captured by torch.export (a .pt2, an hf: model FX refuses) is not "
            "supported yet"
        )
    graph_module = trace(model)
    modules = dict(graph_module.named_modules())
    kept: dict[str, str] = {}
    for node in graph_module.graph.nodes:
        scan = modules.get(node.target) if node.op == "call_module" else None
        for index, role in SCAN_GATE_ARGS.get(type(scan), {}).items():
            if index < len(node.args) and isinstance(node.args[index], fx.Node):
                for name in _layers_behind([node.args[index]], modules):
                    kept.setdefault(name, f"scan {role} projection ({node.target})")
    for found in recognise(graph_module).found:
        gate = found.node
        for name in _layers_behind(list(gate.all_input_nodes), modules):
            kept.setdefault(name, f"{found.family} gate projection ({found.path or gate.name})")
    linears = [
        str(node.target)
        for node in graph_module.graph.nodes
        if node.op == "call_module" and plain_layer(modules[node.target]) is nn.Linear
    ]
    linears = list(dict.fromkeys(linears))  # a layer called twice is quantized once
    kept = {name: why for name, why in kept.items() if name in linears}
    return W4Plan(
        quantized=tuple(name for name in linears if name not in kept),
        kept=kept,
        in_features={name: modules[name].in_features for name in linears},
    )
