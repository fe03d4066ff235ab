"""Quantization-aware training: fine-tune the calibrated fake-quant model with the task loss.

Starts from the float checkpoint's calibrated PTQ model, so the learned scales begin at the
calibrated ones. BN is folded before QAT, so its statistics are frozen for every epoch: the
trained weights are exactly the deployed (folded) ones, which is the whitepaper's "match
the fake-quant placement to the fused inference graph".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from edgegate.train import LossFn

StepHook = Callable[[int, int, float], None]  # (step, total, loss)


@dataclass(frozen=True)
class QATConfig:
    epochs: int = 2
    lr: float = 1e-4
    batch_size: int = 64
    seed: int = 0


def train_qat(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: torch.Tensor,
    labels: torch.Tensor | None,
    config: QATConfig,
    *,
    on_step: StepHook | None = None,
) -> nn.Module:
    """Fine-tune ``model`` (fake-quant, calibrated) in place for ``config.epochs`` epochs with the
    task's loss. The loss works on the traced model, so it may not reach submodules by name (a
    gated-compression model's L1 term): the channel gate stays float anyway."""
    generator = torch.Generator().manual_seed(config.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.lr)
    n = len(inputs)
    per_epoch = math.ceil(n / config.batch_size)
    total, step = per_epoch * config.epochs, 0
    model.train()
    # Dropout draws from the global generator: seed it here, without disturbing the caller's.
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        for _ in range(config.epochs):
            order = torch.randperm(n, generator=generator)
            for start in range(0, n, config.batch_size):
                idx = order[start : start + config.batch_size]
                batch_labels = None if labels is None else labels[idx]
                loss = loss_fn(model, inputs[idx], batch_labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                if on_step is not None:
                    on_step(step, total, float(loss.detach()))
    return model.eval()
