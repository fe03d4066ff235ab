"""Fold inference batch norm into the conv before it, whatever classes the model uses.

A BatchNorm reaches the graph as a module call (torch's class or a subclass that keeps its
forward) or, inside blocks that fuse it with an activation (timm's ``BatchNormAct2d``), as a
functional ``batch_norm`` on the block's buffers. Both fold the same way: the fake-quant model
must quantize the folded weights, since every runtime executes the fused conv, and an unfolded
BN would ship as Conv -> Q -> DQ -> BatchNormalization with its own rounding.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.operator_schemas import normalize_function
from torch.nn.utils.fusion import fuse_conv_bn_weights

from edgegate.recognise.graph import owner

_FUNCTIONAL_BN = {F.batch_norm, torch.batch_norm}
_CONV_BASES = (nn.Conv1d, nn.Conv2d)


@dataclass(frozen=True)
class BatchNormStats:
    mean: torch.Tensor
    var: torch.Tensor
    weight: torch.Tensor | None
    bias: torch.Tensor | None
    eps: float


@dataclass(frozen=True)
class FoldSite:
    conv: fx.Node
    bn: fx.Node
    stats: BatchNormStats

    @property
    def bn_name(self) -> str:
        """The BN's module path: its own for a module call, its block's for a function."""
        return str(self.bn.target) if self.bn.op == "call_module" else owner(self.bn)[0]


def _attr(graph_module: fx.GraphModule, node: object) -> torch.Tensor | None:
    if node is None:
        return None
    if not isinstance(node, fx.Node) or node.op != "get_attr":
        raise LookupError("not a constant")
    value = graph_module
    for part in str(node.target).split("."):
        value = getattr(value, part)
    return value.detach()


def inference_stats(graph_module: fx.GraphModule, node: fx.Node) -> BatchNormStats | None:
    """The running statistics ``node`` normalises with, when it is an inference batch norm."""
    if node.op == "call_module":
        module = graph_module.get_submodule(str(node.target))
        norm = nn.modules.batchnorm._BatchNorm
        if not isinstance(module, norm) or type(module).forward is not norm.forward:
            return None
        if module.training or module.running_mean is None:
            return None
        return BatchNormStats(
            module.running_mean.detach(),
            module.running_var.detach(),
            None if module.weight is None else module.weight.detach(),
            None if module.bias is None else module.bias.detach(),
            float(module.eps),
        )
    if node.op != "call_function" or node.target not in _FUNCTIONAL_BN:
        return None
    normalized = normalize_function(
        F.batch_norm, node.args, node.kwargs, normalize_to_only_use_kwargs=True
    )
    if normalized is None:
        return None
    kwargs = normalized.kwargs
    if kwargs.get("training", False):
        return None
    try:
        mean = _attr(graph_module, kwargs["running_mean"])
        var = _attr(graph_module, kwargs["running_var"])
        weight = _attr(graph_module, kwargs.get("weight"))
        bias = _attr(graph_module, kwargs.get("bias"))
    except LookupError:
        return None
    if mean is None or var is None:
        return None
    return BatchNormStats(mean, var, weight, bias, float(kwargs.get("eps", 1e-5)))


_METADATA_ATTRS = {"ndim", "shape", "dtype", "device"}
_METADATA_METHODS = {"dim", "size"}


def _reads_only_metadata(user: fx.Node) -> bool:
    """``x.ndim``, ``x.shape``, ``x.size()``: a shape check (timm asserts ``x.ndim == 4``
    before its norm) that folding leaves true, since the fused conv's output has x's shape."""
    if user.op == "call_function" and user.target is getattr:
        return user.args[1] in _METADATA_ATTRS
    return user.op == "call_method" and user.target in _METADATA_METHODS


def _plain_conv(graph_module: fx.GraphModule, node: object) -> nn.Module | None:
    if not isinstance(node, fx.Node) or node.op != "call_module":
        return None
    if sum(not _reads_only_metadata(user) for user in node.users) != 1:
        return None
    module = graph_module.get_submodule(str(node.target))
    for base in _CONV_BASES:
        if isinstance(module, base) and type(module).forward is base.forward:
            return module
    return None


def fold_sites(graph_module: fx.GraphModule) -> list[FoldSite]:
    """Every inference batch norm right after a conv that feeds nothing else."""
    sites = []
    for node in graph_module.graph.nodes:
        if node.op not in ("call_module", "call_function") or not node.args:
            continue
        stats = inference_stats(graph_module, node)
        if stats is not None and _plain_conv(graph_module, node.args[0]) is not None:
            sites.append(FoldSite(node.args[0], node, stats))
    return sites


def _folded(conv: nn.Module, stats: BatchNormStats) -> nn.Module:
    weight, bias = fuse_conv_bn_weights(
        conv.weight, conv.bias, stats.mean, stats.var, stats.eps, stats.weight, stats.bias
    )
    fused = copy.deepcopy(conv)
    fused.weight, fused.bias = weight, bias
    return fused


def fold_batch_norm(graph_module: fx.GraphModule) -> int:
    """Fold every batch norm of ``fold_sites`` into its conv; returns how many."""
    sites = fold_sites(graph_module)
    for site in sites:
        path = str(site.conv.target)
        parent, _, attr = path.rpartition(".")
        holder = graph_module.get_submodule(parent) if parent else graph_module
        setattr(holder, attr, _folded(graph_module.get_submodule(path), site.stats))
        site.bn.replace_all_uses_with(site.conv)
        graph_module.graph.erase_node(site.bn)
    graph_module.graph.eliminate_dead_code()
    graph_module.graph.lint()
    graph_module.delete_all_unused_submodules()
    graph_module.recompile()
    return len(sites)
