"""Gated DeltaNet blocks of transformers (Qwen3-Next, Qwen3.5, Olmo-Hybrid, ...) -> GatedDeltaRule.

transformers' fallback path computes the delta rule in ``torch_chunk_gated_delta_rule`` (a
Python loop over 64-token chunks, which pins the traced length) or, one token at a time, in
``torch_recurrent_gated_delta_rule``. Both take q, k [B,T,Hk,K], v [B,T,Hv,V], g and beta
[B,T,Hv], with grouped key heads (each key head serves Hv/Hk consecutive value heads), an
optional L2 norm of q and k, and the scale K^-0.5. Here the head repeat and the L2 norm run as
graph ops in front of one ``gated_delta_rule`` call, so every target gets the scan node.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from edgegate.ops import gated_delta_rule
from edgegate.recognise.recurrences.base import CallsFunction, EdgegateForm

_L2_EPS = 1e-6  # transformers' l2norm: x * rsqrt(sum(x^2) + 1e-6)


def _l2norm(x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt((x * x).sum(dim=-1, keepdim=True) + _L2_EPS)


def delta_rule(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    chunk_size: int = 64,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    use_qk_l2norm_in_kernel: bool = False,
    **_: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """transformers' gated-delta-rule signature, computed by edgegate's op (fp32 inside)."""
    dtype = query.dtype
    key_heads, value_heads = key.shape[2], value.shape[2]
    if key_heads != value_heads:
        if value_heads % key_heads:
            raise ValueError(
                f"gated delta rule: {value_heads} value heads are not a multiple of "
                f"{key_heads} key heads"
            )
        query = query.repeat_interleave(value_heads // key_heads, dim=2)
        key = key.repeat_interleave(value_heads // key_heads, dim=2)
    query, key, value, g, beta = (t.float() for t in (query, key, value, g, beta))
    if use_qk_l2norm_in_kernel:
        query, key = _l2norm(query), _l2norm(key)
    state = None if initial_state is None else initial_state.float()
    out, final = gated_delta_rule(query, key, value, g, beta, state, scale=query.shape[-1] ** -0.5)
    return out.to(dtype), (final if output_final_state else None)


class GatedDeltaNetForm(EdgegateForm):
    replacements: ClassVar = {
        "torch_chunk_gated_delta_rule": delta_rule,
        "torch_recurrent_gated_delta_rule": delta_rule,
    }


class GatedDeltaNet(CallsFunction):
    family = "gated_delta_net"
    op = "GatedDeltaRule"
    functions = ("torch_chunk_gated_delta_rule", "torch_recurrent_gated_delta_rule")
    keyed_by = "torch_chunk_gated_delta_rule"
    form = GatedDeltaNetForm
    families = ("qwen3_next", "qwen3_5", "qwen3_5_moe", "olmo_hybrid")
