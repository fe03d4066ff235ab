"""Calibration runs: activation statistics, then bias correction, with brevitas's context managers.

Each batch is one call of the model: a batch of images, or a batch of whole sequences, so a
sequence model sees its state carried across every step of every calibration sequence. A
streaming model (``(tokens, *states) -> (logits, *new_states)``) calibrates the same way from
zero states; its state inputs, when quantized, are ranged on the states a stream actually hands
from call to call over whole sequences, not on the zeros it starts from
(``calibrate_streaming``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from brevitas.graph.calibrate import bias_correction_mode, calibration_mode
from torch import nn

from edgegate.quant.graph import replace_module, state_quantizers

Batch = tuple[torch.Tensor, ...]
ProgressHook = Callable[[str, int, int], None]  # (phase, done, total)


def _run(model: nn.Module, batches: Sequence[Batch], phase: str, hook: ProgressHook | None) -> None:
    for i, batch in enumerate(batches):
        model(*batch)
        if hook is not None:
            hook(phase, i + 1, len(batches))


@torch.no_grad()
def calibrate(
    model: nn.Module,
    batches: Sequence[Batch],
    *,
    bias_correction: bool = True,
    progress: ProgressHook | None = None,
) -> None:
    """Fix every calibrated quantizer's range from ``batches``, then correct layer biases.

    Bias correction (Nagel et al. 2019) shifts each quantized layer's bias by the mean
    output error that weight quantization introduces, measured on the same batches.
    """
    model.eval()
    with calibration_mode(model):
        _run(model, batches, "calibrate", progress)
    if bias_correction:
        with bias_correction_mode(model):
            _run(model, batches, "bias correction", progress)


StateInit = Callable[[int], tuple[torch.Tensor, ...]]  # batch size -> zero states


def piece_bounds(length: int, pieces: int, shift: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of the pieces one sequence of ``length`` is cut into: cuts every
    ``ceil(length / pieces)`` tokens (so at most ``pieces + 1`` pieces), moved by ``shift`` so
    successive batches cut elsewhere."""
    step = max(1, -(-length // max(1, pieces)))
    cuts = sorted({c for c in range(shift % step, length, step) if 0 < c < length})
    edges = [0, *cuts, length]
    return list(zip(edges[:-1], edges[1:], strict=True))


class _FromZeros(nn.Module):
    """A streaming model called on whole sequences from zero states (one pass each)."""

    def __init__(self, model: nn.Module, init_states: StateInit) -> None:
        super().__init__()
        self.model, self.init_states = model, init_states

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model(tokens, *self.init_states(tokens.shape[0]))[0]


@torch.no_grad()
def reached_states(
    step: nn.Module, batches: Sequence[Batch], init_states: StateInit, pieces: int = 4
) -> list[torch.Tensor]:
    """The states a stream hands from call to call, per layer, concatenated over the batches:
    each whole sequence is fed to the float ``step`` in ``pieces`` with the state carried, and
    the state after every piece is kept (the last one too: a stream goes on past a window).
    The cuts move from batch to batch (a stride of 7 walks every offset), so over the
    calibration set the states come from every position."""
    kept: list[list[torch.Tensor]] = []
    for index, (tokens,) in enumerate(batches):
        states = init_states(tokens.shape[0])
        for start, stop in piece_bounds(tokens.shape[1], pieces, 7 * index + 1):
            states = tuple(step(tokens[:, start:stop], *states)[1:])
            kept.append(list(states))
    return [torch.cat(layer) for layer in zip(*kept, strict=True)]


@torch.no_grad()
def calibrate_streaming(
    model: nn.Module,
    batches: Sequence[Batch],
    step: nn.Module,
    init_states: StateInit,
    *,
    pieces: int = 4,
    bias_correction: bool = True,
    progress: ProgressHook | None = None,
) -> None:
    """``calibrate`` for a streaming ``model`` ``(tokens, *states) -> (logits, *states)``.

    Activations calibrate as the one-pass model does: each batch of whole sequences in one
    call from zero states, the scan carrying the state through every step. A quantized state
    input (``QuantProfile.state_bits``) would see only those zeros there, so it sits out that
    pass and is then ranged in one call on ``reached_states`` of the float ``step``. One call,
    because brevitas averages per-call statistics: fed piece by piece, the first piece's
    zeros would pull every range in.
    """
    quantizers = state_quantizers(model)
    for name in quantizers:
        replace_module(model, name, nn.Identity())
    try:
        calibrate(
            _FromZeros(model, init_states),
            batches,
            bias_correction=bias_correction,
            progress=progress,
        )
    finally:
        for name, quantizer in quantizers.items():
            replace_module(model, name, quantizer)
    if not quantizers:
        return
    states = reached_states(step, batches, init_states, pieces)
    for quantizer, reached in zip(quantizers.values(), states, strict=True):
        quantizer.eval()
        with calibration_mode(quantizer):
            quantizer(reached)


def add_corrected_bias_slots(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Give a rebuilt model the biases that bias correction created, so a saved state loads.

    Bias correction adds a bias to a quantized layer built without one (a tied LM head, say),
    so the calibrated state holds ``<layer>.bias`` that a freshly quantized model lacks.
    """
    for name, module in model.named_modules():
        key = f"{name}.bias" if name else "bias"
        if key in state and getattr(module, "bias", False) is None:
            module.bias = nn.Parameter(torch.zeros_like(state[key]))
