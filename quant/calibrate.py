"""Calibration runs: activation statistics, then bias correction, with brevitas's context managers.

Each batch is one call of the model: a batch of images, or a batch of whole sequences, so a
sequence model sees its state carried across every step of every calibration sequence. A
streaming model (``(tokens, *states) -> (logits, *new_states)``) is fed each whole sequence
in pieces with the state carried from piece to piece (``calibrate_streaming``), so its state
inputs see the states a deployed stream reaches, not only the zeros it starts from.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from brevitas.graph.calibrate import bias_correction_mode, calibration_mode
from torch import nn

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
    """``[start, stop)`` of the pieces one sequence of ``length`` is fed in: cuts every
    ``length // pieces`` tokens, moved by ``shift`` so successive batches cut elsewhere."""
    step = max(1, length // max(1, pieces))
    cuts = sorted({c for c in range(shift % step, length, step) if 0 < c < length})
    edges = [0, *cuts, length]
    return list(zip(edges[:-1], edges[1:], strict=True))


class _Pieces(nn.Module):
    """Runs a streaming model over whole sequences in pieces, carrying the state; the cut
    positions move from call to call so the state inputs see states from every position."""

    def __init__(self, model: nn.Module, init_states: StateInit, pieces: int) -> None:
        super().__init__()
        self.model, self.init_states, self.pieces = model, init_states, pieces
        self.calls = 0

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        states = self.init_states(tokens.shape[0])
        logits = []
        # a stride coprime with common piece lengths walks the shift over every offset
        for start, stop in piece_bounds(tokens.shape[1], self.pieces, 7 * self.calls + 1):
            out = self.model(tokens[:, start:stop], *states)
            logits.append(out[0])
            states = tuple(out[1:])
        self.calls += 1
        return torch.cat(logits, 1)


@torch.no_grad()
def calibrate_streaming(
    model: nn.Module,
    batches: Sequence[Batch],
    init_states: StateInit,
    *,
    pieces: int = 4,
    bias_correction: bool = True,
    progress: ProgressHook | None = None,
) -> None:
    """``calibrate`` for a streaming model: each batch holds whole token sequences, fed in
    ``pieces`` with the state carried, so every activation quantizer sees every position once
    and a quantized state input is ranged on states reached mid-sequence."""
    calibrate(
        _Pieces(model, init_states, pieces),
        batches,
        bias_correction=bias_correction,
        progress=progress,
    )


def add_corrected_bias_slots(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Give a rebuilt model the biases that bias correction created, so a saved state loads.

    Bias correction adds a bias to a quantized layer built without one (a tied LM head, say),
    so the calibrated state holds ``<layer>.bias`` that a freshly quantized model lacks.
    """
    for name, module in model.named_modules():
        key = f"{name}.bias" if name else "bias"
        if key in state and getattr(module, "bias", False) is None:
            module.bias = nn.Parameter(torch.zeros_like(state[key]))
