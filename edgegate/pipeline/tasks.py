"""Tasks: what differs between image classifiers, gated-compression models and language models.

Each stage asks the model's Task instead of switching on a task name: which inputs and outputs
a graph has, which data it reads and how, how it is scored, trained and calibrated, and which
graphs an export writes (a gated-compression model adds its two stages).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from edgegate import data as datasets
from edgegate.errors import BadInput
from edgegate.models import LoadedModel, example_inputs
from edgegate.models.spec import TASKS as TASK_NAMES
from edgegate.targets import ExportPart
from edgegate.train import LossFn, TrainConfig
from edgegate.train.losses import (
    classification_loss,
    gate_classification_loss,
    gated_compression_loss,
    language_model_loss,
)
from edgegate.validate import accuracy

Predict = Callable[[np.ndarray], list[np.ndarray]]


@dataclass(frozen=True)
class TaskData:
    """A split of a task's data: images and labels, or token windows [N, L+1] with no labels."""

    task: str
    inputs: torch.Tensor
    labels: torch.Tensor | None
    source: str


def torch_predict(module: nn.Module) -> Predict:
    """Wrap a module as the backend-neutral predict callable the evaluators take. A module
    with a ``max_batch`` (an exported program's bound on its batch) is fed in pieces of at
    most that many rows."""
    limit = getattr(module, "max_batch", None)

    def run(rows: np.ndarray) -> list[np.ndarray]:
        out = module(torch.from_numpy(np.ascontiguousarray(rows)))
        outs = out if isinstance(out, tuple | list) else (out,)
        return [o.detach().float().numpy() for o in outs]

    @torch.no_grad()
    def predict(batch: np.ndarray) -> list[np.ndarray]:
        if not limit or len(batch) <= limit:
            return run(batch)
        pieces = [run(batch[i : i + limit]) for i in range(0, len(batch), limit)]
        return [np.concatenate(parts) for parts in zip(*pieces, strict=True)]

    return predict


def make_part(
    stem: str,
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    input_names: list[str],
    output_names: list[str],
    dynamic_dims: list[tuple[int, ...]],
    metadata: dict[str, str],
) -> ExportPart:
    """An export part whose file metadata also records its inputs' example shapes."""
    inputs = [
        {"name": n, "example_shape": list(a.shape), "dtype": str(a.dtype).split(".")[-1]}
        for n, a in zip(input_names, args, strict=True)
    ]
    meta = {**metadata, "part": f"{stem}", "inputs": json.dumps(inputs)}
    classifiers = frozenset(output_names) & {"logits"}
    gates = frozenset(output_names) & {"gate_prob"}
    return ExportPart(
        stem, module, args, input_names, output_names, dynamic_dims, meta, classifiers,
        gate_outputs=gates,
    )  # fmt: skip


class Recorder:
    """A predict callable that keeps what it returned: one pass over the test split both
    scores a model and gives the outputs to compare with another's."""

    def __init__(self, predict: Predict) -> None:
        self.predict = predict
        self._batches: list[list[np.ndarray]] = []

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        out = self.predict(batch)
        self._batches.append(list(out))
        return out

    @property
    def outputs(self) -> list[np.ndarray]:
        """Every output, concatenated over the batches seen (in the order they came)."""
        return [np.concatenate(parts) for parts in zip(*self._batches, strict=True)]


class Task:
    """Image classification; the other tasks override what differs."""

    name = "image"
    input_name = "images"
    output_names: tuple[str, ...] = ("logits",)
    classifier_output = "logits"
    gate_outputs: frozenset[str] = frozenset()
    calibration_batch = 16
    quality_metric = "top1"
    loss_key = "drop_points"  # what the INT8 report calls the loss against float

    # --- shapes -------------------------------------------------------------------------

    def geometry(self, loaded: LoadedModel, input_size: int | None) -> tuple[int, int]:
        """(channels, side): the spec's own options (`in_channels=1`), the given side, else
        the model's default; user models default to 3 x 32 x 32."""
        if loaded.info is None:
            return 3, input_size or 32
        # the zoo's own example checks the size (fixed-size ViTs, a CNN's total stride)
        channels, _, size = example_inputs(loaded.spec, input_size=input_size)[0].shape[1:]
        return int(channels), int(size)

    def example(
        self,
        loaded: LoadedModel,
        *,
        batch: int = 1,
        input_size: int | None = None,
        seq_len: int | None = None,
    ) -> tuple[torch.Tensor, ...]:
        if loaded.info is not None:
            return example_inputs(loaded.spec, batch=batch, input_size=input_size)
        channels, side = self.geometry(loaded, input_size)
        return (torch.randn(batch, channels, side, side),)

    def dynamic_dims(self) -> tuple[int, ...]:
        """Batch and image side vary at run time; channels are fixed by the weights."""
        return (0, 2, 3)

    def geometry_options(self, example_shape: list[int] | None) -> dict[str, int | None]:
        """The input size / sequence length an export was made at, to feed validation alike."""
        if not example_shape:
            return {"input_size": None, "seq_len": None}
        return {"input_size": int(example_shape[-1]), "seq_len": None}

    # --- data ---------------------------------------------------------------------------

    def load(
        self,
        loaded: LoadedModel,
        source: str | None,
        split: str,
        *,
        input_size: int | None = None,
        seq_len: int | None = None,
    ) -> TaskData:
        channels, size = self.geometry(loaded, input_size)
        images = datasets.resolve_image_data(source, split, size=size, channels=channels)
        if images.labels is None:
            raise BadInput(f"image data '{images.name}' has no labels: accuracy needs labels")
        return TaskData(self.name, images.images, images.labels, images.name)

    def model_inputs(self, data: TaskData) -> torch.Tensor:
        """What the model is fed: the images (language models drop the last target token)."""
        return data.inputs

    def parity_rows(self, samples: int) -> int:
        """How many rows the output-by-output parity check compares."""
        return samples

    def calibration_inputs(
        self,
        loaded: LoadedModel,
        source: str | None,
        samples: int,
        *,
        input_size: int | None = None,
        seq_len: int | None = None,
    ) -> tuple[torch.Tensor, str]:
        """Model inputs for calibration and where they came from. Stored arrays must have the
        model's channel count: calibration ranges come from their statistics, so a grey set
        replicated into three identical channels would calibrate a model it does not feed."""
        channels, size = self.geometry(loaded, input_size)
        images = datasets.resolve_image_data(source, "calib", size=size, channels=channels)
        if images.source_channels is not None and images.source_channels != channels:
            raise BadInput(
                f"calibration data '{images.name}' holds {images.source_channels}-channel "
                f"images, but {loaded.spec} takes {channels} channels"
            )
        return images.images[:samples], images.name

    # --- scoring and training -----------------------------------------------------------

    def score(self, predict: Predict, data: TaskData, module: nn.Module) -> dict[str, Any]:
        """Task metrics of any backend's predict callable; ``module`` supplies its settings."""
        assert data.labels is not None
        return accuracy.as_dict(
            accuracy.classifier_metrics(predict, data.inputs.numpy(), data.labels.numpy())
        )

    def score_module(
        self, module: nn.Module, data: TaskData, predict: Predict | None = None
    ) -> dict[str, Any]:
        """Task metrics of a torch module (run through ``predict`` when given, e.g. a
        ``Recorder`` that keeps the outputs), with what the module itself reports."""
        predict = predict or torch_predict(module.eval())
        return {**self.score(predict, data, module), **self.module_metrics(module)}

    def module_metrics(self, module: nn.Module) -> dict[str, Any]:
        """Metrics a model reports about itself rather than its outputs (GC: compression)."""
        return {}

    def training_loss(self, config: TrainConfig) -> LossFn:
        return classification_loss

    def qat_loss(self, float_module: nn.Module) -> LossFn:
        return classification_loss

    def quality_loss(self, reference: dict[str, Any], candidate: dict[str, Any]) -> float:
        """What a candidate lost against a reference: top-1 points (perplexity for LMs)."""
        return round(reference["top1"] - candidate["top1"], 4)

    def loss_budget(self, reference: dict[str, Any], max_drop: float) -> float:
        """The largest ``quality_loss`` allowed by ``--max-drop`` (top-1 points here)."""
        return max_drop

    # --- export -------------------------------------------------------------------------

    def export_parts(
        self, module: nn.Module, example: tuple[torch.Tensor, ...], metadata: dict[str, str]
    ) -> list[ExportPart]:
        """The graphs an export writes: the whole model, here."""
        return [
            make_part(
                "model",
                module,
                example,
                [self.input_name],
                list(self.output_names),
                [self.dynamic_dims()],
                metadata,
            )
        ]

    def settings(self, module: nn.Module) -> dict[str, Any]:
        """Model settings a deployed artifact needs besides its graph (GC: threshold)."""
        return {}


class GatedCompressionTask(Task):
    """A gated-compression classifier: logits plus the gate's probability of "positive"."""

    name = "gc"
    output_names = ("logits", "gate_prob")
    gate_outputs = frozenset({"gate_prob"})

    def score(self, predict: Predict, data: TaskData, module: nn.Module) -> dict[str, Any]:
        assert data.labels is not None
        return accuracy.as_dict(
            accuracy.gate_metrics(
                predict,
                data.inputs.numpy(),
                data.labels.numpy(),
                positive_class=int(module.positive_class),
                threshold=float(module.threshold),
            )
        )

    def module_metrics(self, module: nn.Module) -> dict[str, Any]:
        return {"compression_ratio": round(float(module.gc.compression_ratio()), 4)}

    def training_loss(self, config: TrainConfig) -> LossFn:
        return functools.partial(
            gated_compression_loss, gate_weight=config.gc_gate_weight, l1_weight=config.gc_l1_weight
        )

    def qat_loss(self, float_module: nn.Module) -> LossFn:
        return functools.partial(
            gate_classification_loss, positive_class=int(float_module.positive_class)
        )

    def export_parts(
        self, module: nn.Module, example: tuple[torch.Tensor, ...], metadata: dict[str, str]
    ) -> list[ExportPart]:
        """The whole model, then the deployed pair: stage 1 (image -> gate, compressed
        features) and stage 2 (features -> logits), which runs only past the gate."""
        with torch.no_grad():
            features = module.stage1(*example)[1]
        dims = self.dynamic_dims()
        return [
            *super().export_parts(module, example, metadata),
            make_part(
                "stage1",
                module.stage1,
                example,
                ["images"],
                ["gate_prob", "features"],
                [dims],
                metadata,
            ),
            make_part(
                "stage2", module.stage2, (features,), ["features"], ["logits"], [dims], metadata
            ),
        ]

    def settings(self, module: nn.Module) -> dict[str, Any]:
        return {
            "threshold": float(getattr(module, "threshold", 0.5)),
            "positive_class": int(getattr(module, "positive_class", -1)),
        }


class LanguageModelTask(Task):
    """A byte-level causal LM: tokens [B, T] -> logits [B, T, 256], scored by perplexity."""

    name = "lm"
    input_name = "tokens"
    calibration_batch = 4
    quality_metric = "perplexity"
    loss_key = "perplexity_increase"

    def seq_len(self, loaded: LoadedModel, seq_len: int | None) -> int:
        if seq_len is not None:
            return seq_len
        return loaded.info.default_input[0] if loaded.info is not None else 128

    def example(
        self,
        loaded: LoadedModel,
        *,
        batch: int = 1,
        input_size: int | None = None,
        seq_len: int | None = None,
    ) -> tuple[torch.Tensor, ...]:
        if loaded.info is not None:
            return example_inputs(loaded.spec, batch=batch, seq_len=seq_len)
        return (torch.randint(0, datasets.VOCAB_SIZE, (batch, self.seq_len(loaded, seq_len))),)

    def dynamic_dims(self) -> tuple[int, ...]:
        return (0, 1)  # batch and sequence length

    def geometry_options(self, example_shape: list[int] | None) -> dict[str, int | None]:
        if not example_shape:
            return {"input_size": None, "seq_len": None}
        return {"input_size": None, "seq_len": int(example_shape[-1])}

    def _windows(self, loaded: LoadedModel, source: str | None, split: str, seq_len: int | None):
        tokens = datasets.resolve_text_data(source, split)
        length = self.seq_len(loaded, seq_len)
        windows = datasets.text_windows(tokens, length)
        if len(windows) == 0:
            raise BadInput(
                f"text data '{source or 'stdlib'}' is shorter than one window "
                f"of {length + 1} tokens"
            )
        return windows

    def load(
        self,
        loaded: LoadedModel,
        source: str | None,
        split: str,
        *,
        input_size: int | None = None,
        seq_len: int | None = None,
    ) -> TaskData:
        windows = self._windows(loaded, source, split, seq_len)
        return TaskData(self.name, windows, None, source or "stdlib")

    def model_inputs(self, data: TaskData) -> torch.Tensor:
        return data.inputs[:, :-1]

    def parity_rows(self, samples: int) -> int:
        return max(1, samples // 16)  # each row is a whole sequence of decisions

    def calibration_inputs(
        self,
        loaded: LoadedModel,
        source: str | None,
        samples: int,
        *,
        input_size: int | None = None,
        seq_len: int | None = None,
    ) -> tuple[torch.Tensor, str]:
        """Whole sequences: a scan's state is carried through every step of each one."""
        windows = self._windows(loaded, source, "calib", seq_len)
        return windows[:samples, :-1], source or "stdlib"

    def score(self, predict: Predict, data: TaskData, module: nn.Module) -> dict[str, Any]:
        return accuracy.as_dict(accuracy.language_model_metrics(predict, data.inputs.numpy()))

    def training_loss(self, config: TrainConfig) -> LossFn:
        return language_model_loss

    def qat_loss(self, float_module: nn.Module) -> LossFn:
        return language_model_loss

    def quality_loss(self, reference: dict[str, Any], candidate: dict[str, Any]) -> float:
        return round(candidate["perplexity"] - reference["perplexity"], 4)

    def loss_budget(self, reference: dict[str, Any], max_drop: float) -> float:
        """``--max-drop`` read as a percentage of the float perplexity: 1.0 allows +1 %."""
        return round(reference["perplexity"] * max_drop / 100.0, 4)


TASKS: dict[str, Task] = {t.name: t for t in (Task(), GatedCompressionTask(), LanguageModelTask())}
assert set(TASKS) == set(TASK_NAMES), "every zoo task needs a Task object"


def resolve_task(loaded: LoadedModel, name: str | None = None) -> Task:
    """The model's task: the zoo's record, the source's (timm and torchvision build image
    classifiers), else the ``--task`` a user model was given."""
    if loaded.info is not None:
        return TASKS[loaded.info.task]
    if loaded.task is not None:
        if name not in (None, loaded.task):
            raise BadInput(f"model '{loaded.spec}' is an {loaded.task} model: drop --task {name}")
        return TASKS[loaded.task]
    if name is None:
        raise BadInput(
            f"model '{loaded.spec}' is not from the zoo: pass --task ({', '.join(TASKS)})"
        )
    if name not in TASKS:
        raise BadInput(f"unknown task '{name}': expected one of {', '.join(TASKS)}")
    return TASKS[name]
