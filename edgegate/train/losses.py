"""Per-task training losses. Gated-compression adds a gate BCE and an L1 sparsity term."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def classification_loss(module: nn.Module, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    assert y is not None, "classification needs labels"
    return F.cross_entropy(module(x), y)


def gated_compression_loss(
    module: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    gate_weight: float,
    l1_weight: float,
) -> torch.Tensor:
    """Class CE + BCE teaching the gate to pass only the positive class + L1 on the channel gate.

    The L1 term is what makes the features sent to stage 2 sparse (the compression).
    """
    logits, gate_prob = module(x)
    return (
        F.cross_entropy(logits, y)
        + gate_weight * gate_loss(gate_prob, y, module.positive_class)
        + l1_weight * module.gc.l1_penalty()
    )


def gate_classification_loss(
    module: nn.Module, x: torch.Tensor, y: torch.Tensor | None, *, positive_class: int
) -> torch.Tensor:
    """Class CE + gate BCE, without the L1 term: for a traced (QAT) copy, which has no ``gc``
    submodule and no ``positive_class`` attribute of its own."""
    assert y is not None, "gated compression needs labels"
    logits, gate_prob = module(x)
    return F.cross_entropy(logits, y) + gate_loss(gate_prob, y, positive_class)


def gate_loss(gate_prob: torch.Tensor, y: torch.Tensor, positive_class: int) -> torch.Tensor:
    """BCE teaching the GC gate to pass only ``positive_class``."""
    positive = (y == positive_class).float()
    return F.binary_cross_entropy(gate_prob.reshape(-1).clamp(1e-6, 1 - 1e-6), positive)


def language_model_loss(
    module: nn.Module, windows: torch.Tensor, _labels: torch.Tensor | None = None
) -> torch.Tensor:
    """Next-token cross entropy; ``windows`` is [B, L+1] token ids (no labels)."""
    logits = module(windows[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1))
