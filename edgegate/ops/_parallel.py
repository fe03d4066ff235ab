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


def causal_bias(T: int, dtype: torch.dtype, device: torch.device, strict: bool = False):
    """[T, T]: 0 where key position s may reach query position t (s <= t), else -inf."""
    allowed = causal_mask(T, device, strict)
    return torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(
        ~allowed, float("-inf")
    )


def causal_decay(b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """exp(b_t - b_s) where ``mask`` allows, else 0; b: [..., T] cumulative log decay.

    The exponent gets -inf added *before* exp where the mask forbids, so positions s > t (where
    b_t - b_s > 0 can be huge) never overflow; allowed exponents are <= 0, so strong decay
    underflows to 0. The bias depends on T alone: the data path is a sub, an add and an exp,
    which a delegate (XNNPACK) takes whole, where a ``where`` on it would cut it in two.
    """
    diff = b.unsqueeze(-1) - b.unsqueeze(-2)
    bias = torch.zeros(mask.shape, dtype=diff.dtype, device=diff.device).masked_fill(
        ~mask, float("-inf")
    )
    return (diff + bias).exp()


def strict_lower(x: torch.Tensor) -> torch.Tensor:
    """``x`` [..., T, T] with its diagonal and upper triangle zeroed (``x`` finite there): a
    product with a 0/1 mask that depends on T alone, so the data path stays one multiply."""
    keep = causal_mask(x.shape[-1], x.device, strict=True).to(x.dtype)
    return x * keep


def unit_lower_inverse(A: torch.Tensor, max_len: int = MAX_PARALLEL_T) -> torch.Tensor:
    """(I + A)^-1 for strictly lower-triangular A [..., N, N], N <= max_len (may be symbolic).

    Block doubling with matmuls only: if P inverts the block-diagonal part of M = I + A with
    blocks of size s, then P - P C P inverts its block-diagonal part with blocks of 2s, where C
    holds M's entries in the lower-left quarter of each 2s block ([[X,0],[C,Y]]^-1 has the
    corner -Y^-1 C X^-1). Starting from P = I (blocks of 1), ceil(log2 max_len) rounds give the
    inverse. Every P is a block of the true inverse, so nothing grows as the terms of a Neumann
    series (I - A + A^2 - ...) do; a partial last block needs no padding, and rounds past N
    change nothing, so the trip count is static while N stays symbolic.

    Pass A with one batch dim ([BH, N, N]): the products are then plain ``bmm`` (a 4-D
    matmul becomes expands and reshapes around one, which a delegate may not take when two
    dims are symbolic), and the block masks are float arithmetic on positions, so XNNPACK
    takes the whole inverse as one partition.
    """
    N = A.shape[-1]
    pos = torch.arange(N, dtype=A.dtype, device=A.device)
    same = _same_block(pos, 1)  # [N, N]: 1 where row and col share a block of `size` (I)
    inv = None
    size = 1
    while size < max_len:
        wider = _same_block(pos, 2 * size)
        # the lower-left quarter of each 2*size block: the same 2*size block, not the same
        # size block (its upper-right quarter too, where A is 0)
        C = A * (wider - same)
        inv = same - C if inv is None else inv - bmm(inv, bmm(C, inv))  # from P = I: I - C
        same, size = wider, size * 2
    return torch.eye(N, dtype=A.dtype, device=A.device).expand(A.shape) if inv is None else inv


def bmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b``, as ``torch.bmm`` for two [BH, ., .] operands: ``matmul`` would add an
    expand and reshapes around it, each a node a delegate may refuse (two symbolic dims)."""
    return torch.bmm(a, b) if a.dim() == 3 and b.dim() == 3 else a @ b


def _same_block(pos: torch.Tensor, size: int) -> torch.Tensor:
    """[N, N] 0/1: whether positions ``pos`` (float, integral) fall in the same block of
    ``size``. Float arithmetic only (floor, abs, relu): no integer division, comparison or
    ``where``, so a delegate that takes none of those (XNNPACK) takes the whole inverse."""
    block = torch.floor(pos * (1.0 / size))  # exact: size is a power of two, pos < 2**24
    return torch.relu(1.0 - (block.unsqueeze(-1) - block.unsqueeze(0)).abs())
