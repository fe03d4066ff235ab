"""Eager dispatch between the recurrent and chunked forms of each op.

The chunked forms carry a fixed cost of a few dozen small kernels, so a decode step
(T of 1 or 2) is cheaper step by step; from a handful of steps on the chunked form wins
by a growing margin (about 10x at T=64 and beyond for GLA on CPU).
"""

from __future__ import annotations

from typing import Literal

import torch

from edgegate.ops.clipped_softmax.chunk import chunk_clipped_softmax
from edgegate.ops.clipped_softmax.naive import naive_clipped_softmax
from edgegate.ops.delta_rule.chunk import chunk_gated_delta_rule
from edgegate.ops.delta_rule.naive import naive_gated_delta_rule
from edgegate.ops.gla.chunk import chunk_gated_linear_attention
from edgegate.ops.gla.naive import naive_gated_linear_attention
from edgegate.ops.linear_scan.chunk import chunk_gated_linear_scan
from edgegate.ops.linear_scan.naive import naive_gated_linear_scan

Impl = Literal["auto", "naive", "chunk"]
NAIVE_MAX_T = 2
DEFAULT_CHUNK = 64


def _check_impl(impl: str) -> None:
    if impl not in ("auto", "naive", "chunk"):
        raise ValueError(f"impl must be 'auto', 'naive' or 'chunk', got {impl!r}")


def _use_chunk(impl: str, T: int) -> bool:
    _check_impl(impl)
    return impl == "chunk" or (impl == "auto" and T > NAIVE_MAX_T)


def run_gated_linear_scan(
    x: torch.Tensor,
    g: torch.Tensor,
    h0: torch.Tensor | None = None,
    *,
    chunk_size: int = DEFAULT_CHUNK,
    impl: Impl = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    if _use_chunk(impl, x.shape[1]):
        return chunk_gated_linear_scan(x, g, h0, chunk_size=chunk_size)
    return naive_gated_linear_scan(x, g, h0)


def run_gated_linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    h0: torch.Tensor | None,
    scale: float,
    *,
    chunk_size: int = DEFAULT_CHUNK,
    impl: Impl = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    if _use_chunk(impl, q.shape[1]):
        return chunk_gated_linear_attention(q, k, v, g, h0, scale, chunk_size=chunk_size)
    return naive_gated_linear_attention(q, k, v, g, h0, scale)


def run_gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    h0: torch.Tensor | None,
    scale: float,
    *,
    chunk_size: int = DEFAULT_CHUNK,
    impl: Impl = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    if _use_chunk(impl, q.shape[1]):
        return chunk_gated_delta_rule(q, k, v, g, beta, h0, scale, chunk_size=chunk_size)
    return naive_gated_delta_rule(q, k, v, g, beta, h0, scale)


def run_clipped_softmax(
    x: torch.Tensor,
    gamma: float,
    zeta: float,
    dim: int,
    *,
    chunk_size: int = DEFAULT_CHUNK,
    impl: Impl = "auto",
) -> torch.Tensor:
    # "auto" stays on torch.softmax: it is already one fused pass on CPU, and the
    # streamed form only pays off inside a kernel with limited fast memory.
    _check_impl(impl)
    if impl == "chunk":
        return chunk_clipped_softmax(x, gamma, zeta, dim, chunk_size=chunk_size)
    return naive_clipped_softmax(x, gamma, zeta, dim)
