"""`torch.library` custom ops, so that `torch.export` keeps each op as one graph node.

The exporters map these nodes to the `edgegate` ONNX domain (design §3). The eager
implementation is the auto dispatch; the fake implementations only state shapes, so
B and T stay symbolic. The autograd formulas recompute the python forms under
autograd, which keeps the op trainable if it is ever called directly (e.g. from a
compiled graph); eager training calls the python forms and never comes here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from edgegate.ops.dispatch import (
    run_clipped_softmax,
    run_gated_delta_rule,
    run_gated_linear_attention,
    run_gated_linear_scan,
)

NAMESPACE = "edgegate"


def _own(out: torch.Tensor, *inputs: torch.Tensor | None) -> torch.Tensor:
    """Contiguous (as the fakes promise) and not sharing an input's storage, which custom
    ops forbid (the final state is h0 itself when T == 0)."""
    out = out.contiguous()
    ptr = out.untyped_storage().data_ptr()
    if any(t is not None and t.untyped_storage().data_ptr() == ptr for t in inputs):
        return out.clone()
    return out


def _recompute_grads(
    fn: Callable[..., torch.Tensor | tuple[torch.Tensor, ...]],
    tensors: Sequence[torch.Tensor | None],
    grads: Sequence[torch.Tensor | None],
) -> list[torch.Tensor | None]:
    """Gradients of fn(*tensors) by re-running it under autograd (no saved activations)."""
    with torch.enable_grad():
        leaves = [
            t.detach().requires_grad_() if t is not None and t.is_floating_point() else t
            for t in tensors
        ]
        outs = fn(*leaves)
        outs = outs if isinstance(outs, tuple) else (outs,)
        pairs = [
            (o, go) for o, go in zip(outs, grads, strict=True) if go is not None and o.requires_grad
        ]
        wrt = [t for t in leaves if t is not None and t.requires_grad]
        if pairs:
            outs, gouts = zip(*pairs, strict=True)
            got = torch.autograd.grad(outs, wrt, gouts, allow_unused=True)
        else:
            got = [None] * len(wrt)
    it = iter(got)
    return [next(it) if t is not None and t.requires_grad else None for t in leaves]


# --- gated_linear_scan ---------------------------------------------------------------


@torch.library.custom_op(f"{NAMESPACE}::gated_linear_scan", mutates_args=())
def gated_linear_scan_op(
    x: torch.Tensor, g: torch.Tensor, h0: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    y, h = run_gated_linear_scan(x, g, h0)
    return _own(y, x, g, h0), _own(h, x, g, h0)


@gated_linear_scan_op.register_fake
def _(x: torch.Tensor, g: torch.Tensor, h0: torch.Tensor | None):
    B, _, H, D = x.shape
    return x.new_empty(x.shape), x.new_empty(B, H, D)


def _scan_setup(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs)


def _scan_backward(ctx, dy, dh):
    return tuple(_recompute_grads(run_gated_linear_scan, ctx.saved_tensors, (dy, dh)))


gated_linear_scan_op.register_autograd(_scan_backward, setup_context=_scan_setup)


# --- gated_linear_attention ----------------------------------------------------------


@torch.library.custom_op(f"{NAMESPACE}::gated_linear_attention", mutates_args=())
def gated_linear_attention_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    h0: torch.Tensor | None,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    o, s = run_gated_linear_attention(q, k, v, g, h0, scale)
    return _own(o, q, k, v, g, h0), _own(s, q, k, v, g, h0)


@gated_linear_attention_op.register_fake
def _(q, k, v, g, h0, scale):
    B, T, H, K = q.shape
    V = v.shape[-1]
    return q.new_empty(B, T, H, V), q.new_empty(B, H, K, V)


def _scale_setup(ctx, inputs, output) -> None:
    *tensors, scale = inputs
    ctx.save_for_backward(*tensors)
    ctx.scale = scale


def _gla_backward(ctx, do, ds):
    def fn(q, k, v, g, h0):
        return run_gated_linear_attention(q, k, v, g, h0, ctx.scale)

    return (*_recompute_grads(fn, ctx.saved_tensors, (do, ds)), None)


gated_linear_attention_op.register_autograd(_gla_backward, setup_context=_scale_setup)


# --- gated_delta_rule ----------------------------------------------------------------


@torch.library.custom_op(f"{NAMESPACE}::gated_delta_rule", mutates_args=())
def gated_delta_rule_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    h0: torch.Tensor | None,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    o, s = run_gated_delta_rule(q, k, v, g, beta, h0, scale)
    return _own(o, q, k, v, g, beta, h0), _own(s, q, k, v, g, beta, h0)


@gated_delta_rule_op.register_fake
def _(q, k, v, g, beta, h0, scale):
    B, T, H, K = q.shape
    V = v.shape[-1]
    return q.new_empty(B, T, H, V), q.new_empty(B, H, K, V)


def _delta_backward(ctx, do, ds):
    def fn(q, k, v, g, beta, h0):
        return run_gated_delta_rule(q, k, v, g, beta, h0, ctx.scale)

    return (*_recompute_grads(fn, ctx.saved_tensors, (do, ds)), None)


gated_delta_rule_op.register_autograd(_delta_backward, setup_context=_scale_setup)


# --- clipped_softmax -----------------------------------------------------------------


@torch.library.custom_op(f"{NAMESPACE}::clipped_softmax", mutates_args=())
def clipped_softmax_op(x: torch.Tensor, gamma: float, zeta: float, dim: int) -> torch.Tensor:
    return _own(run_clipped_softmax(x, gamma, zeta, dim), x)


@clipped_softmax_op.register_fake
def _(x, gamma, zeta, dim):
    return x.new_empty(x.shape)


def _softmax_setup(ctx, inputs, output) -> None:
    x, ctx.gamma, ctx.zeta, ctx.dim = inputs
    ctx.save_for_backward(x)


def _softmax_backward(ctx, dy):
    def fn(x):
        return run_clipped_softmax(x, ctx.gamma, ctx.zeta, ctx.dim)

    return (*_recompute_grads(fn, ctx.saved_tensors, (dy,)), None, None, None)


clipped_softmax_op.register_autograd(_softmax_backward, setup_context=_softmax_setup)
