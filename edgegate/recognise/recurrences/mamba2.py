"""Mamba-2 SSD mixers of transformers (Mamba2, Bamba, Falcon-H1, GraniteMoeHybrid, Nemotron-H,
Zamba2) -> GatedLinearAttention.

Every one of these mixers calls its model file's own copy of ``mamba2_scan_forward(module,
hidden_states, B, C, dt, cache, **kwargs)`` between the convolution and the gated norm, and
reads the SSD parameters from the mixer under the same names (``A_log``, ``D``, ``dt_bias``,
``num_heads``, ``head_dim``, ``n_groups``, ``ssm_state_size``, ``time_step_limit``). Without a
cache its torch path is ``mamba2_chunk_scan``, an einsum form over the sequence padded to whole
chunks: under ``torch.export`` the chunk count becomes guards on the length, so a dynamic
sequence length fails to export. The SSD scan is a gated linear attention with a scalar decay
per head:

    dt = clamp(softplus(dt + dt_bias), *time_step_limit);  g = dt * -exp(A_log)
    S_t = exp(g_t) S_{t-1} + (dt_t B_t)^T x_t;  y_t = C_t S_t + D x_t

so here it is one ``gated_linear_attention`` call (keys B*dt, queries C, values x, scale 1)
with the group repeat, the discretisation and the D skip as graph ops around it. With a cache
(generation, edgegate's streaming step) the cache's recurrent state is the op's initial state
and its final state goes back into the cache, so a decode step is the same op at T = 1.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from edgegate.ops import gated_linear_attention
from edgegate.recognise.recurrences.base import CallsFunction, EdgegateForm

_NAME = "mamba2_scan_forward"
_ATTRIBUTES = (
    "A_log",
    "D",
    "dt_bias",
    "num_heads",
    "head_dim",
    "n_groups",
    "ssm_state_size",
    "time_step_limit",
)
# The library's own mamba2_scan_forward of each model file, taken before the form patches it.
_ORIGINALS: dict[str, Callable[..., torch.Tensor]] = {}


def _original(module: nn.Module) -> Callable[..., torch.Tensor]:
    library = getattr(module, "library_class", type(module))
    original = _ORIGINALS.get(library.__module__)
    if original is None:
        original = vars(sys.modules[library.__module__]).get(_NAME)
    if original is None or original is ssd_scan_forward:
        raise RuntimeError(
            f"mamba2 scan: no library {_NAME} recorded for {library.__module__} "
            "(the edgegate form records it before each call)"
        )
    return original


def ssd_scan_forward(
    module: nn.Module,
    hidden_states: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    dt: torch.Tensor,
    cache: Any | None,
    **kwargs: Any,
) -> torch.Tensor:
    """transformers' ``mamba2_scan_forward`` signature: one edgegate
    ``gated_linear_attention`` (fp32 inside, returned in fp32 as the library's chunked path
    returns it). Extra kwargs are ignored, as the library's torch path ignores them.

    With a cache, its recurrent state (the library's ``[B, H, head_dim, N]``, the transpose of
    the op's ``[B, H, K=N, V=head_dim]``) is the initial state, and the final state is written
    back, at any T (1 included): a streaming step is one graph for every piece length. A
    cache that records past states (assisted decoding) runs the library's own function."""
    layer = getattr(module, "layer_idx", None)
    recording = cache is not None and (layer is None or cache.is_recording_past(layer))
    if recording or not all(hasattr(module, name) for name in _ATTRIBUTES):
        return _original(module)(module, hidden_states, B, C, dt, cache, **kwargs)
    batch, seq_len, _ = hidden_states.shape
    heads, head_dim = module.num_heads, module.head_dim
    groups, state = module.n_groups, module.ssm_state_size
    if heads % groups:
        raise ValueError(f"mamba2 scan: {heads} heads are not a multiple of {groups} groups")
    low, high = (float(bound) for bound in module.time_step_limit)
    x = hidden_states.float().reshape(batch, seq_len, heads, head_dim)
    B = B.float().reshape(batch, seq_len, groups, state)
    C = C.float().reshape(batch, seq_len, groups, state)
    B = B.repeat_interleave(heads // groups, dim=2, output_size=heads)
    C = C.repeat_interleave(heads // groups, dim=2, output_size=heads)
    dt = F.softplus(dt.float() + module.dt_bias.float())
    if low > 0.0 or high < float("inf"):  # softplus is >= 0: the default (0, inf) is no clamp
        dt = torch.clamp(dt, min=low, max=high)
    g = dt * -torch.exp(module.A_log.float())  # [B,T,H], log decay per head
    state = None if cache is None else cache.get_recurrent_state(layer, state_idx=0)
    h0 = None if state is None else state.float().transpose(-1, -2)
    out, final = gated_linear_attention(C, B * dt[..., None], x, g, h0, scale=1.0)
    if cache is not None:
        cache.update_recurrent_state(final.transpose(-1, -2).contiguous(), layer)
    out = out + module.D.float()[:, None] * x
    return out.reshape(batch, seq_len, heads * head_dim)


class Mamba2Form(EdgegateForm):
    replacements: ClassVar = {_NAME: ssd_scan_forward}

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        namespace = vars(sys.modules[self.library_class.__module__])
        current = namespace.get(_NAME)
        if current is not None and current is not ssd_scan_forward:
            _ORIGINALS[self.library_class.__module__] = current
        return super().forward(*args, **kwargs)


class Mamba2SSD(CallsFunction):
    family = "mamba2_ssd"
    op = "GatedLinearAttention"
    functions = (_NAME,)
    keyed_by = _NAME
    form = Mamba2Form
    families = ("mamba2", "bamba", "falcon_h1", "granitemoehybrid", "nemotron_h", "zamba2")
