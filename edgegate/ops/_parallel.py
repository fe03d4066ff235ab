"""Pieces shared by the loop-free ("parallel") forms: causal decay matrices and a matmul-only
inverse of a unit lower-triangular matrix.

These forms use only core aten ops (cumsum, exp, masked fills, matmuls) and no loop whose trip
count depends on T, so `torch.export` keeps T symbolic and converters without loops or linear
algebra (Core ML, XNNPACK) take them. They cost O(T^2) memory, hence a maximum length.
"""

from __future__ import annotations

import torch

MAX_PARALLEL_T = 1024  # the O(T^2) forms' range: [B,H,T,T(,K)] intermediates beyond this are GBs


def causal_mask(T: int, device: torch.device, strict: bool = False) -> torch.Tensor:
    """[T, T] bool, True where key position s may reach query position t (s <= t)."""
    pos = torch.arange(T, device=device)
    return pos.unsqueeze(-1) > pos.unsqueeze(0) if strict else pos.unsqueeze(-1) >= pos.unsqueeze(0)


def causal_decay(b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """exp(b_t - b_s) where ``mask`` allows, else 0; b: [..., T] cumulative log decay.

    The exponent is masked to -inf *before* exp, so positions s > t (where b_t - b_s > 0 can be
    huge) never overflow; allowed exponents are <= 0, so strong decay underflows to 0.
    """
    diff = b.unsqueeze(-1) - b.unsqueeze(-2)
    return torch.where(mask, diff, torch.full_like(diff, float("-inf"))).exp()


def unit_lower_inverse(A: torch.Tensor, max_len: int = MAX_PARALLEL_T) -> torch.Tensor:
    """(I + A)^-1 for strictly lower-triangular A [..., N, N], N <= max_len (may be symbolic).

    Block doubling with matmuls only: if P inverts the block-diagonal part of M = I + A with
    blocks of size s, then P - P C P inverts its block-diagonal part with blocks of 2s, where C
    holds M's entries in the lower-left quarter of each 2s block ([[X,0],[C,Y]]^-1 has the
    corner -Y^-1 C X^-1). Starting from P = I (blocks of 1), ceil(log2 max_len) rounds give the
    inverse. Every P is a block of the true inverse, so nothing grows as the terms of a Neumann
    series (I - A + A^2 - ...) do; a partial last block needs no padding, and rounds past N
    change nothing, so the trip count is static while N stays symbolic.
    """
    N = A.shape[-1]
    pos = torch.arange(N, device=A.device)
    row, col = pos.unsqueeze(-1), pos.unsqueeze(0)
    inv = torch.eye(N, dtype=A.dtype, device=A.device).expand(A.shape)
    size = 1
    while size < max_len:
        same_pair = torch.div(row, 2 * size, rounding_mode="floor") == torch.div(
            col, 2 * size, rounding_mode="floor"
        )
        corner = (
            same_pair
            & (torch.div(row, size, rounding_mode="floor") % 2 == 1)
            & (torch.div(col, size, rounding_mode="floor") % 2 == 0)
        )
        C = torch.where(corner, A, torch.zeros_like(A))
        inv = inv - inv @ (C @ inv)
        size *= 2
    return inv
