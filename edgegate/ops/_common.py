"""Helpers shared by the op families: dtype policy, padding, scale."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """At least fp32 (half precision drifts over long scans); fp64 stays fp64 for gradcheck."""
    return torch.promote_types(x.dtype, torch.float32)


def resolve_scale(scale: float | None, k_dim: int) -> float:
    return float(k_dim) ** -0.5 if scale is None else float(scale)


def pad_time(x: torch.Tensor, multiple: int, dim: int) -> torch.Tensor:
    """Zero-pad `dim` up to a multiple; zeros are neutral (no input, decay exp(0)=1, beta=0)."""
    n = x.shape[dim]
    rem = (-n) % multiple
    if rem == 0:
        return x
    dim = dim % x.dim()
    pad = [0, 0] * (x.dim() - 1 - dim) + [0, rem]
    return F.pad(x, pad)


def to_chunks(x: torch.Tensor, chunk: int) -> torch.Tensor:
    """[B,T,H,...] -> contiguous [B,H,N,chunk,...], zero padded at the end of T.

    Contiguous once here, so that the batched matmuls downstream fold (B,H,N) without
    copying and the elementwise ops do not inherit a strided layout.
    """
    x = pad_time(x.transpose(1, 2), chunk, 2).contiguous()
    B, H, Tp = x.shape[:3]
    return x.view(B, H, Tp // chunk, chunk, *x.shape[3:])


def split_limit(dtype: torch.dtype) -> float:
    """Largest in-chunk log-decay for which exp(b) and exp(-b) both stay comfortably normal."""
    return -0.5 * math.log(torch.finfo(dtype).tiny)


def chunk_len(T: int, chunk_size: int, multiple: int = 1) -> int:
    """Chunk length actually used: chunk_size, or T rounded up to `multiple` if shorter."""
    if chunk_size < 1 or chunk_size % multiple:
        raise ValueError(f"chunk_size must be a positive multiple of {multiple}, got {chunk_size}")
    return min(chunk_size, -(-max(T, 1) // multiple) * multiple)
