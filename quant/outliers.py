"""Quantizability statistics: which layers' activations have outliers that W8A8 will clip.

Per layer: max |x| and kurtosis of its output (Bondarenko et al. measure both; a heavy
tail makes per-tensor 8-bit ranges waste their levels), plus the weight range. A flagged
layer inside a softmax attention gets the fix that paper found: clipped softmax or gated
attention.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from edgegate.models.blocks.attention import Attention

KURTOSIS_LIMIT = 20.0  # a Gaussian has 3; the paper's outlier layers sit in the hundreds+


@dataclass
class LayerStats:
    name: str
    kind: str
    max_abs: float = 0.0
    kurtosis: float = 0.0
    weight_min: float | None = None
    weight_max: float | None = None
    attention_variant: str | None = None
    flagged: bool = False
    suggestion: str = ""
    _moments: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0, 0.0], repr=False)

    def update(self, x: torch.Tensor) -> None:
        """Accumulate raw moments so kurtosis covers every batch, not just the last."""
        x = x.detach().double().flatten()
        m = self._moments
        m[0] += x.numel()
        m[1] += float(x.sum())
        m[2] += float((x**2).sum())
        m[3] += float((x**3).sum())
        m[4] += float((x**4).sum())
        self.max_abs = max(self.max_abs, float(x.abs().max()))

    def finish(self) -> None:
        n, s1, s2, s3, s4 = self._moments
        if n == 0:
            return
        mu = s1 / n
        var = s2 / n - mu**2
        fourth = s4 / n - 4 * mu * s3 / n + 6 * mu**2 * s2 / n - 3 * mu**4
        self.kurtosis = fourth / var**2 if var > 0 else 0.0


def _attention_owner(model: nn.Module) -> dict[str, str]:
    """Layer name -> variant of the attention module that owns it."""
    owners = {}
    for name, module in model.named_modules():
        if isinstance(module, Attention):
            for sub, _ in module.named_modules():
                owners[f"{name}.{sub}" if sub else name] = module.variant
    return owners


@torch.no_grad()
def activation_stats(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, ...]],
    kurtosis_limit: float = KURTOSIS_LIMIT,
) -> list[LayerStats]:
    """Run ``batches`` through ``model`` and gather per-layer output statistics."""
    owners = _attention_owner(model)
    stats: dict[str, LayerStats] = {}
    handles = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear | nn.Conv2d | Attention):
            continue
        entry = LayerStats(name, type(module).__name__, attention_variant=owners.get(name))
        if hasattr(module, "weight") and isinstance(module.weight, torch.Tensor):
            entry.weight_min = float(module.weight.min())
            entry.weight_max = float(module.weight.max())
        stats[name] = entry
        handles.append(
            module.register_forward_hook(
                lambda _m, _i, out, e=entry: e.update(out[0] if isinstance(out, tuple) else out)
            )
        )
    try:
        model.eval()
        for batch in batches:
            model(*batch)
    finally:
        for handle in handles:
            handle.remove()
    for entry in stats.values():
        entry.finish()
        entry.flagged = entry.kurtosis > kurtosis_limit
        if entry.flagged:
            entry.suggestion = (
                "outliers: retrain with clipped softmax or gated attention"
                if entry.attention_variant == "softmax"
                else "outliers: consider per-channel or percentile/mse calibration"
            )
    return list(stats.values())
