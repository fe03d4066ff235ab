"""Public gated operators. Layout [B,T,H,D]; gates in log space (g <= 0, decay exp(g)).

Each scan takes an optional initial state h0 and returns (out, final_state), so a
sequence fed in pieces with the state carried equals one pass. In eager mode the
python forms run directly (plain autograd, chunked for T > 2); under `torch.export`
each call becomes one `torch.ops.edgegate.*` node with symbolic B and T, which the
ONNX exporter maps to the edgegate domain (there `chunk_size`/`impl` do not apply).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch

from edgegate.ops import custom_ops  # noqa: F401  (registers torch.ops.edgegate.*)
from edgegate.ops._common import resolve_scale
from edgegate.ops.dispatch import (
    DEFAULT_CHUNK,
    Impl,
    run_clipped_softmax,
    run_gated_delta_rule,
    run_gated_linear_attention,
    run_gated_linear_scan,
)
from edgegate.ops.shapes import check_layout

ScanObserver = Callable[[str, list[tuple[int, ...]]], None]  # (ONNX op type, input shapes)
_observers: list[ScanObserver] = []


@contextlib.contextmanager
def observe_scans(observer: ScanObserver) -> Iterator[None]:
    """Within the block, every gated scan called (eagerly or under export) is reported to
    ``observer`` with its input shapes: how a target checks a model it must take, in one
    forward pass, before spending minutes on an export."""
    _observers.append(observer)
    try:
        yield
    finally:
        _observers.remove(observer)


def _report(op_type: str, *tensors: torch.Tensor | None) -> None:
    for observer in _observers:
        observer(op_type, [tuple(t.shape) for t in tensors if t is not None])


def gated_linear_scan(
    x: torch.Tensor,
    g: torch.Tensor,
    h0: torch.Tensor | None = None,
    *,
    chunk_size: int = DEFAULT_CHUNK,
    impl: Impl = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """h_t = exp(g_t) h_{t-1} + x_t; y_t = h_t. x, g: [B,T,H,D]; state [B,H,D].

    Covers HGRN, minGRU-style and diagonal-SSM recurrences.
    """
    check_layout("gated_linear_scan", x=(x, "BTHK"), g=(g, "BTHK"), h0=(h0, "BHK"))
    _report("GatedLinearScan", x, g, h0)
    if torch.compiler.is_exporting():
        return torch.ops.edgegate.gated_linear_scan(x, g, h0)
    return run_gated_linear_scan(x, g, h0, chunk_size=chunk_size, impl=impl)


def gated_linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    h0: torch.Tensor | None = None,
    scale: float | None = None,
    *,
    chunk_size: int = DEFAULT_CHUNK,
    impl: Impl = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t; o_t = (scale q_t) S_t.

    q, k: [B,T,H,K]; v: [B,T,H,V]; g: [B,T,H,K] (GLA) or [B,T,H] (Mamba-2/RetNet,
    broadcast over K); state [B,H,K,V]; scale defaults to K**-0.5.
    """
    g_layout = "BTH" if g.dim() == 3 else "BTHK"
    check_layout(
        "gated_linear_attention",
        q=(q, "BTHK"), k=(k, "BTHK"), v=(v, "BTHV"), g=(g, g_layout), h0=(h0, "BHKV"),
    )  # fmt: skip
    _report("GatedLinearAttention", q, k, v, g, h0)
    scale = resolve_scale(scale, q.shape[-1])
    if torch.compiler.is_exporting():
        return torch.ops.edgegate.gated_linear_attention(q, k, v, g, h0, scale)
    return run_gated_linear_attention(q, k, v, g, h0, scale, chunk_size=chunk_size, impl=impl)


def gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    h0: torch.Tensor | None = None,
    scale: float | None = None,
    *,
    chunk_size: int = DEFAULT_CHUNK,
    impl: Impl = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """S = exp(g_t) S_{t-1}; u = beta_t (v_t - k_t S); S_t = S + k_t^T u; o_t = (scale q_t) S_t.

    q, k: [B,T,H,K] (k L2-normalised and beta in (0, 1) keep it contractive);
    v: [B,T,H,V]; g, beta: [B,T,H]; state [B,H,K,V]; scale defaults to K**-0.5.
    """
    check_layout(
        "gated_delta_rule",
        q=(q, "BTHK"), k=(k, "BTHK"), v=(v, "BTHV"), g=(g, "BTH"), beta=(beta, "BTH"),
        h0=(h0, "BHKV"),
    )  # fmt: skip
    _report("GatedDeltaRule", q, k, v, g, beta, h0)
    scale = resolve_scale(scale, q.shape[-1])
    if torch.compiler.is_exporting():
        return torch.ops.edgegate.gated_delta_rule(q, k, v, g, beta, h0, scale)
    return run_gated_delta_rule(q, k, v, g, beta, h0, scale, chunk_size=chunk_size, impl=impl)


def clipped_softmax(
    x: torch.Tensor,
    gamma: float,
    zeta: float = 1.0,
    dim: int = -1,
    *,
    chunk_size: int = DEFAULT_CHUNK,
    impl: Impl = "auto",
) -> torch.Tensor:
    """clip((zeta - gamma) softmax(x) + gamma, 0, 1): gamma < 0 lets a head attend to nothing
    with exact zeros, which removes the outliers that break int8 attention."""
    if torch.compiler.is_exporting():
        return torch.ops.edgegate.clipped_softmax(x, float(gamma), float(zeta), int(dim))
    return run_clipped_softmax(x, gamma, zeta, dim, chunk_size=chunk_size, impl=impl)
