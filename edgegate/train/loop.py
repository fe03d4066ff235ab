"""One training loop for every zoo task, with a rich progress bar."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0
    max_steps_per_epoch: int | None = None  # caps an epoch: tiny smoke runs and tests
    gc_gate_weight: float = 1.0
    gc_l1_weight: float = 2.0


@dataclass
class TrainResult:
    module: nn.Module
    epoch_losses: list[float] = field(default_factory=list)
    steps: int = 0


ProgressHook = Callable[[int, int, float], None]  # (step, total_steps, loss)
# (module, inputs, labels or None) -> scalar loss; the task supplies it (edgegate.train.losses)
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor | None], torch.Tensor]


def _batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=generator)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def train_model(
    module: nn.Module,
    loss_fn: LossFn,
    inputs: torch.Tensor,
    labels: torch.Tensor | None,
    config: TrainConfig,
    on_step: ProgressHook | None = None,
) -> TrainResult:
    """Train in place with AdamW and a cosine schedule, minimising ``loss_fn`` over batches of
    ``inputs`` (and ``labels``, None for language models, whose inputs are token windows)."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    n = len(inputs)
    steps_per_epoch = math.ceil(n / config.batch_size)
    if config.max_steps_per_epoch is not None:
        steps_per_epoch = min(steps_per_epoch, config.max_steps_per_epoch)
    total = max(steps_per_epoch * config.epochs, 1)

    optimizer = torch.optim.AdamW(
        module.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    warmup = max(total // 20, 1)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    result = TrainResult(module=module)
    module.train()
    step = 0
    for _ in range(config.epochs):
        running, count = 0.0, 0
        for idx in _batches(n, config.batch_size, generator)[:steps_per_epoch]:
            loss = loss_fn(module, inputs[idx], None if labels is None else labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
            running += loss.item()
            count += 1
            if on_step is not None:
                on_step(step, total, running / max(count, 1))
        result.epoch_losses.append(running / max(count, 1))
    result.steps = step
    module.eval()
    return result
