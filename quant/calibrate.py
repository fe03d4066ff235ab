"""Calibration runs: activation statistics, then bias correction, with brevitas's context managers.

Each batch is one call of the model: a batch of images, or a batch of whole sequences, so a
sequence model sees its state carried across every step of every calibration sequence.
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


def add_corrected_bias_slots(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Give a rebuilt model the biases that bias correction created, so a saved state loads.

    Bias correction adds a bias to a quantized layer built without one (a tied LM head, say),
    so the calibrated state holds ``<layer>.bias`` that a freshly quantized model lacks.
    """
    for name, module in model.named_modules():
        key = f"{name}.bias" if name else "bias"
        if key in state and getattr(module, "bias", False) is None:
            module.bias = nn.Parameter(torch.zeros_like(state[key]))
