"""Task metrics on labelled data: top-1, perplexity, and gated-compression gate metrics.

Every evaluator takes a ``predict`` callable (a batch of inputs -> tuple of output
arrays), so the same code scores a torch module today and an ONNX or TensorRT runner
later, without this module knowing any backend.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass

import numpy as np

Predict = Callable[[np.ndarray], Sequence[np.ndarray]]


@dataclass(frozen=True)
class ClassifierMetrics:
    top1: float  # percent
    samples: int


@dataclass(frozen=True)
class GateMetrics:
    """How well a gated-compression gate separates positives from negatives."""

    top1: float  # percent, full model on every sample
    stop_rate_negatives: float  # percent of negatives stopped at stage 1
    pass_rate_positives: float  # percent of positives passed on to stage 2
    gate_accuracy: float  # percent of samples whose gate decision matches the label
    samples: int


@dataclass(frozen=True)
class LanguageModelMetrics:
    perplexity: float  # per byte
    bits_per_byte: float
    tokens: int


def _batches(n: int, batch_size: int) -> Iterator[slice]:
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def classifier_metrics(
    predict: Predict, images: np.ndarray, labels: np.ndarray, batch_size: int = 256
) -> ClassifierMetrics:
    correct = 0
    for sl in _batches(len(images), batch_size):
        logits = predict(images[sl])[0]
        correct += int((np.argmax(logits, axis=-1) == labels[sl]).sum())
    return ClassifierMetrics(top1=100.0 * correct / max(len(images), 1), samples=len(images))


def gate_metrics(
    predict: Predict,
    images: np.ndarray,
    labels: np.ndarray,
    positive_class: int,
    threshold: float = 0.5,
    batch_size: int = 256,
) -> GateMetrics:
    """``predict`` returns (logits, gate_prob) as a gated-compression model does."""
    correct, gate_right = 0, 0
    stopped_neg, n_neg, passed_pos, n_pos = 0, 0, 0, 0
    for sl in _batches(len(images), batch_size):
        logits, gate_prob = predict(images[sl])[:2]
        y = labels[sl]
        positive = y == positive_class
        passed = np.asarray(gate_prob).reshape(-1) >= threshold
        correct += int((np.argmax(logits, axis=-1) == y).sum())
        gate_right += int((passed == positive).sum())
        stopped_neg += int((~passed & ~positive).sum())
        n_neg += int((~positive).sum())
        passed_pos += int((passed & positive).sum())
        n_pos += int(positive.sum())
    n = max(len(images), 1)
    return GateMetrics(
        top1=100.0 * correct / n,
        stop_rate_negatives=100.0 * stopped_neg / max(n_neg, 1),
        pass_rate_positives=100.0 * passed_pos / max(n_pos, 1),
        gate_accuracy=100.0 * gate_right / n,
        samples=len(images),
    )


def language_model_metrics(
    predict: Predict, windows: np.ndarray, batch_size: int = 32
) -> LanguageModelMetrics:
    """``windows`` is [N, L+1] token ids: inputs are [:, :-1], next-token targets [:, 1:]."""
    total_nll, tokens = 0.0, 0
    for sl in _batches(len(windows), batch_size):
        batch = windows[sl]
        logits = np.asarray(predict(batch[:, :-1])[0], dtype=np.float64)
        targets = batch[:, 1:]
        shifted = logits - logits.max(axis=-1, keepdims=True)
        log_z = np.log(np.exp(shifted).sum(axis=-1))
        picked = np.take_along_axis(shifted, targets[..., None], axis=-1)[..., 0]
        total_nll += float((log_z - picked).sum())
        tokens += targets.size
    mean_nll = total_nll / max(tokens, 1)
    return LanguageModelMetrics(
        perplexity=math.exp(mean_nll), bits_per_byte=mean_nll / math.log(2), tokens=tokens
    )


def as_dict(metrics: ClassifierMetrics | GateMetrics | LanguageModelMetrics) -> dict:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(metrics).items()}
