"""RG-LRU blocks of transformers (RecurrentGemma / Griffin) -> GatedLinearScan.

transformers' ``RecurrentGemmaRglru.forward`` computes the gates, then runs the diagonal
recurrence h_t = a_t * ~reset_t * h_{t-1} + x_t in the method ``_rnn_scan``: a Python loop over
time (which pins the traced length under torch.export), or one step when T == 1. The edgegate
form overrides only ``_rnn_scan`` with one ``gated_linear_scan`` (the library's forward, gates
and input normalisation stay its own code) and keeps its contract: the output in the input's
dtype, the final state [B, lru_width] in ``acc_dtype`` (float32), which the library's forward
stores in ``self.recurrent_states``; a given state is the initial state at any T, 1 included.

The log-space gate is ``log(a)`` of the decay the library passes in. The library computes
a = exp(log_a) itself, and recomputing log_a from the block's parameters would need the
activations (a second copy of the recurrent-gate matmul in the exported graph) while ignoring
the rounding of ``a`` that the library's loop multiplies by (in bfloat16, a is rounded to 8
bits before the loop): log of the library's own ``a``, in float32, reproduces its decays to
about one ulp. Where ``a`` underflowed to 0 (log_a < -103 nats, far outside a trained model's
range) g is clamped to ``_G_MIN`` = log(float32 tiny) = -87.3, never -inf (a -inf poisons the
cumulative-sum scan forms: -inf - -inf is nan).

Resets (``position_ids == 0``): the library multiplies a by ~reset, dropping the carried state.
At t = 0 that is exact here: the initial state is zeroed where reset and g_0 = 0 (a fresh
state needs no decay, and g_0 = 0 keeps cumulative sums small). A reset at t > 0 (packed
sequences with explicit position_ids) becomes g_t = ``_G_MIN``: the state is multiplied by
exp(-87.3) = 1.2e-38 instead of 0, below float32's resolution for any state under ~1e31 times
the new input, so equal in practice though not bit for bit. edgegate's exports run from a zero
state with positions 0..T-1, where only t = 0 resets.
"""

from __future__ import annotations

import math

import torch

from edgegate.ops import gated_linear_scan
from edgegate.recognise.recurrences.base import CallsMethod, EdgegateForm

_G_MIN = math.log(torch.finfo(torch.float32).tiny)  # -87.34: exp() still a normal float32


def rglru_scan(
    hidden_states: torch.Tensor,
    recurrent_gate: torch.Tensor,
    reset: torch.Tensor,
    recurrent_states: torch.Tensor | None,
    heads: int = 1,
    acc_dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' ``_rnn_scan`` contract, computed by edgegate's op.

    hidden_states, recurrent_gate [B, T, W] (a = exp(log_a), in (0, 1]); reset [B or 1, T, 1]
    bool; recurrent_states [B, W] or None (a zero state). ``heads`` splits W for the op's
    [B, T, H, D] layout (the recurrence is diagonal: any split gives the same numbers).
    """
    batch, seq_len, width = hidden_states.shape
    x = hidden_states.to(acc_dtype)
    log_a = torch.log(recurrent_gate.to(acc_dtype)).clamp_min(_G_MIN)
    first = torch.arange(seq_len, device=reset.device)[None, :, None] == 0
    g = torch.where(reset, torch.where(first, 0.0, _G_MIN), log_a)
    g = g.expand(batch, seq_len, width)
    h0 = None
    if recurrent_states is not None:
        h0 = recurrent_states.to(device=x.device, dtype=acc_dtype) * ~reset[:, 0]
        h0 = h0.reshape(batch, heads, width // heads)
    out, final = gated_linear_scan(
        x.reshape(batch, seq_len, heads, width // heads),
        g.reshape(batch, seq_len, heads, width // heads),
        h0,
    )
    return out.reshape(batch, seq_len, width).to(hidden_states.dtype), final.reshape(batch, width)


class RglruForm(EdgegateForm):
    """``RecurrentGemmaRglru`` with ``_rnn_scan`` as one ``gated_linear_scan``."""

    def _rnn_scan(
        self,
        hidden_states: torch.Tensor,
        recurrent_gate: torch.Tensor,
        reset: torch.Tensor,
        recurrent_states: torch.Tensor | None,
        acc_dtype: torch.dtype = torch.float32,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        width = hidden_states.shape[-1]
        heads = getattr(self, "num_attention_heads", 1)
        if not isinstance(heads, int) or heads < 1 or width % heads:
            heads = 1
        return rglru_scan(
            hidden_states, recurrent_gate, reset, recurrent_states, heads=heads, acc_dtype=acc_dtype
        )


class Rglru(CallsMethod):
    family = "rg_lru"
    op = "GatedLinearScan"
    methods = ("_rnn_scan",)
    keyed_by = "RecurrentGemmaRglru._rnn_scan"
    form = RglruForm
    families = ("recurrent_gemma",)
