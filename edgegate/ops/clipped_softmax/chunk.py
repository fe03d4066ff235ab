"""Online (streaming) clipped softmax: blockwise running max and sum, then one normalise pass.

This is the form a fused kernel uses when the softmax axis does not fit in fast
memory; here it mainly pins down that the blocked reduction equals the one-shot one.
On CPU eager, `torch.softmax` is already a fused single kernel and is faster, so the
public function only uses this form when asked to.
"""

from __future__ import annotations

import torch

from edgegate.ops._common import chunk_len, compute_dtype


def chunk_clipped_softmax(
    x: torch.Tensor,
    gamma: float,
    zeta: float = 1.0,
    dim: int = -1,
    *,
    chunk_size: int = 64,
) -> torch.Tensor:
    """Same contract as `naive_clipped_softmax`, reducing over blocks of `chunk_size`."""
    dt = compute_dtype(x)
    xs = x.to(dt).movedim(dim, -1)
    stat_shape = (*xs.shape[:-1], 1)
    m = xs.new_full(stat_shape, float("-inf"))
    s = xs.new_zeros(stat_shape)
    # Softmax is shift invariant, so the running max carries no gradient.
    for blk in xs.split(chunk_len(xs.shape[-1], chunk_size), dim=-1):
        m_new = torch.maximum(m, blk.detach().amax(-1, keepdim=True))
        # A row that is -inf so far has nothing to rescale; shift by 0 to avoid inf - inf.
        shift = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
        s = s * torch.exp(m - shift) + torch.exp(blk - shift).sum(-1, keepdim=True)
        m = m_new
    shift = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = torch.exp(xs - shift) / s
    out = torch.clamp((zeta - gamma) * p + gamma, 0.0, 1.0)
    return out.movedim(-1, dim).to(x.dtype).contiguous()
