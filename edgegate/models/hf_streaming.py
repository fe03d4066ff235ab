"""The streaming step of an ``hf:`` causal LM: ``(tokens, *states) -> (logits, *new_states)``.

A deployed stream feeds a sequence in pieces (one token per call is a decode step), so every
layer's state must be an explicit input and output of the graph. Rather than re-implementing
each family's decode path, the step drives transformers' own cache: it builds a
``DynamicCache`` from the state tensors, calls the model with ``cache=`` and
``use_cache=True``, and reads the updated states back out as tensors. Per layer, in order:

- a recurrent layer (``LinearAttentionLayer``: Qwen3-Next's Gated DeltaNet, Mamba2's SSD): its
  causal-conv state ``[B, channels, kernel]`` (the last ``kernel`` conv inputs, transformers'
  layout) and its recurrent state (the library's layout, e.g. ``[B, H, K, V]``);
- an attention layer (``DynamicLayer``): keys and values ``[B, kv_heads, past, head_dim]``,
  whose ``past`` axis grows by T each call (a dynamic dim of the export: see
  ``state_dynamic_dims``).

A fresh stream starts from ``init_states`` (zeros; empty KV caches): a zero conv state is the
zero padding of a first call, and a zero recurrent state is no state. Positions (rotary
embeddings) continue from the KV length. What the cache cannot carry is refused in one line
(``BadInput``): layers that keep their state in module attributes (RecurrentGemma's recurrent
blocks: its multi-token path also drops the carried conv state) and sliding-window KV caches
(whose mask needs an absolute position the states do not hold).

The step shares the LM's modules, so recurrences swapped in place beforehand
(``edgegate.recognise``) are what it runs and exports: their edgegate forms take and return the
cache's states (``gated_delta_rule``'s ``initial_state``, the SSD scan's cache).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from edgegate.errors import BadInput

PROBE_TOKENS = 2  # a prefill long enough to create every cache layer's state
EXAMPLE_PAST = 3  # a traced past length: torch.export pins sizes 0 and 1 to constants


@dataclass(frozen=True)
class StateSlot:
    """One state tensor of the step: which layer, what it is, its shape less the batch."""

    layer: int
    kind: str  # "conv" | "recurrent" | "keys" | "values"
    shape: tuple[int, ...]  # without the batch; a KV past axis is 0 (an empty cache)
    dtype: torch.dtype

    @property
    def dynamic(self) -> tuple[int, ...]:
        """Dims that vary between calls: the batch, and a KV cache's past length."""
        return (0, 2) if self.kind in ("keys", "values") else (0,)


def _cache_utils() -> Any:
    import transformers.cache_utils as cache_utils

    return cache_utils


def probe_slots(model: nn.Module) -> list[StateSlot]:
    """The state tensors of ``model``'s cache, found by one short prefill; BadInput (one
    line) for state the cache does not hold."""
    cu = _cache_utils()
    config = model.config
    kind = getattr(config, "model_type", "?")
    cache = cu.DynamicCache(config=config)
    tokens = torch.zeros(1, PROBE_TOKENS, dtype=torch.long)
    with torch.no_grad():
        model(input_ids=tokens, cache=cache, use_cache=True, return_dict=True)
    slots: list[StateSlot] = []
    for index, layer in enumerate(cache.layers):
        if isinstance(layer, cu.LinearAttentionCacheLayerMixin):
            if layer.number_of_states != 1:
                raise BadInput(
                    f"--streaming: {kind} layer {index} keeps {layer.number_of_states} states "
                    "per layer; edgegate's streaming step carries one"
                )
            held = (("conv", layer.conv_states), ("recurrent", layer.recurrent_states))
            found = [(name, states[0]) for name, states in held if states[0] is not None]
            if not found:
                raise BadInput(
                    f"--streaming: {kind} layer {index} keeps its recurrent state outside "
                    "transformers' cache (in the block's own attributes), so it cannot be "
                    "carried as graph inputs and outputs"
                )
            slots += [StateSlot(index, name, tuple(t.shape[1:]), t.dtype) for name, t in found]
        if isinstance(layer, cu.DynamicSlidingWindowLayer):
            raise BadInput(
                f"--streaming: {kind} layer {index} is sliding-window attention, whose cache "
                "mask needs an absolute position that the carried states do not hold"
            )
        if isinstance(layer, cu.DynamicLayer):
            for name, t in (("keys", layer.keys), ("values", layer.values)):
                shape = (t.shape[1], 0, *t.shape[3:])
                slots.append(StateSlot(index, name, shape, t.dtype))
        elif not isinstance(layer, (cu.LinearAttentionCacheLayerMixin, cu.DummyLayer)):
            raise BadInput(
                f"--streaming: {kind} layer {index} has a {type(layer).__name__} cache, "
                "which edgegate's streaming step does not carry"
            )
    if not slots:
        raise BadInput(f"--streaming: {kind} keeps no state in transformers' cache")
    return slots


def build_cache(model: nn.Module, slots: list[StateSlot], states: tuple[torch.Tensor, ...]) -> Any:
    """A ``DynamicCache`` holding ``states`` (cloned: the cache updates some in place)."""
    cu = _cache_utils()
    cache = cu.DynamicCache(config=model.config)
    for slot, state in zip(slots, states, strict=True):
        layer = cache.layers[slot.layer]
        if slot.kind in ("conv", "recurrent"):
            layer.device, layer.dtype = state.device, state.dtype
            layer.has_previous_state[0] = True
            if slot.kind == "conv":
                layer.conv_states[0] = state.clone()
                layer.conv_kernel_size[0] = state.shape[-1]
                layer.is_conv_states_initialized[0] = True
            else:
                layer.recurrent_states[0] = state.clone()
                layer.is_recurrent_states_initialized[0] = True
        else:
            layer.device, layer.dtype = state.device, state.dtype
            setattr(layer, slot.kind, state)
            layer.is_initialized = True
    return cache


def read_cache(cache: Any, slots: list[StateSlot]) -> tuple[torch.Tensor, ...]:
    """The states ``cache`` holds after a call, in ``slots``' order."""
    out = []
    for slot in slots:
        layer = cache.layers[slot.layer]
        if slot.kind == "conv":
            out.append(layer.conv_states[0])
        elif slot.kind == "recurrent":
            out.append(layer.recurrent_states[0])
        else:
            out.append(getattr(layer, slot.kind))
    return tuple(out)


class HfStreamingStep(nn.Module):
    """forward(tokens, *states) -> (logits, *new_states) over an ``hf:`` LM's own modules.

    Export this (not the LM) to get every layer's state as explicit graph inputs and outputs.
    """

    def __init__(self, model: nn.Module, slots: list[StateSlot]) -> None:
        super().__init__()
        self.model = model
        self.slots = slots

    def forward(self, tokens: torch.Tensor, *states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if len(states) != len(self.slots):
            raise BadInput(f"streaming step: expected {len(self.slots)} states, got {len(states)}")
        cache = build_cache(self.model, self.slots, states)
        kwargs: dict[str, Any] = {}
        kinds = [slot.kind for slot in self.slots]
        keys = states[kinds.index("keys")] if "keys" in kinds else None
        if keys is not None:  # rotary positions continue from the cached length
            past = keys.shape[2]
            positions = torch.arange(tokens.shape[1], device=tokens.device) + past
            kwargs["position_ids"] = positions.unsqueeze(0).expand(tokens.shape[0], -1)
        out = self.model(input_ids=tokens, cache=cache, use_cache=True, return_dict=True, **kwargs)
        return (out.logits.float(), *read_cache(cache, self.slots))


def zero_states(
    slots: list[StateSlot], batch: int, device: torch.device | str | None = None
) -> tuple[torch.Tensor, ...]:
    """A fresh stream's states: zeros, and empty KV caches."""
    return tuple(torch.zeros(batch, *s.shape, dtype=s.dtype, device=device) for s in slots)
