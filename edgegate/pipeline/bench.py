"""The bench stage: latency of an export on its target's runner, and a GC model's stream."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from edgegate import data as datasets
from edgegate.errors import BadInput
from edgegate.outputs import check_output_file, make_parents
from edgegate.pipeline.artifacts import Artifact, open_artifact
from edgegate.pipeline.validate import STAGE1_THREADS, two_stage_runner
from edgegate.progress import SILENT, Progress
from edgegate.validate import bench as benchmark


def bench_feed(art: Artifact, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs at the export example's shape, with the batch dim set to ``batch``."""
    rng = np.random.default_rng(seed)
    examples = art.manifest.extra.get("example_shapes", {}) if art.manifest else {}
    feed = {}
    for spec in art.input_specs:
        shape = list(examples.get(spec.name, spec.shape))
        if not shape:
            raise BadInput(
                f"input '{spec.name}' of '{art.model_path}' is a scalar: nothing to time"
            )
        shape[0] = batch
        if any(not isinstance(d, int) for d in shape):
            raise BadInput(
                f"input '{spec.name}' of '{art.model_path}' has dynamic dims {spec.shape} besides "
                "the batch: bench an export folder (its manifest records the example shape)"
            )
        if spec.dtype.startswith("int"):
            feed[spec.name] = rng.integers(0, 256, size=shape).astype(spec.dtype)
        else:
            feed[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
    return feed


def bench(
    artifact: Path,
    *,
    runs: int = 50,
    warmup: int = 5,
    threads: int | None = 2,
    batch: int = 1,
    positive_rate: float = 0.10,
    stream_samples: int = 200,
    stage1_threads: int = STAGE1_THREADS,
    plot: Path | None = None,
    progress: Progress = SILENT,
) -> dict[str, Any]:
    """Latency of the exported model; for GC exports also the two-stage stream latency."""
    if not 0.0 <= positive_rate <= 1.0:
        raise BadInput(f"--positive-rate {positive_rate} must lie in [0, 1]")
    for name, value, low in (("--runs", runs, 1), ("--warmup", warmup, 0), ("--batch", batch, 1)):
        if value < low:
            raise BadInput(f"{name} must be at least {low}, got {value}")
    if stage1_threads < 1:
        raise BadInput(f"--stage1-threads must be at least 1, got {stage1_threads}")
    if plot is not None:
        check_output_file(plot, "--plot file", (".png",))
    art = open_artifact(artifact)
    art.target.check_available()
    declared = art.max_batch(art.stem_of(art.model_path))
    if declared is not None and batch > declared:
        raise BadInput(
            f"--batch {batch} is beyond what '{art.model_path.name}' declares (batch up to "
            f"{declared}; its manifest's ranges)"
        )
    feed = bench_feed(art, batch)
    with art.runner(threads=threads) as runner:
        runner.input_specs()  # a corrupt file fails here, before any timing
        with progress.phase(f"time {runs} runs", total=warmup + runs) as step:
            full = benchmark.bench(runner, feed, runs=runs, warmup=warmup, on_run=step)
        result: dict[str, Any] = {
            "artifact": os.fspath(artifact),
            "target": art.target.name,
            "runtime": runner.name,
            "input_shapes": {name: list(value.shape) for name, value in feed.items()},
            **benchmark.as_dict(full),
            "warnings": art.target.host_warnings(
                art.manifest, art.model_path.name, art.model_path.parent
            ),
        }
        if art.has_two_stages():
            images, positive = stream_images(art)
            # the full model as the stream would deploy it (called at intervals, its threads
            # idle between calls, like the two stages'), so the ratio compares like with like
            full_model = art.runner(threads=threads)
            full_model.idle_between_runs = True
            with (
                two_stage_runner(art, threads, stage1_threads) as two_stage,
                full_model,
                progress.phase(f"stream of {stream_samples} samples"),
            ):
                stream = benchmark.bench_two_stage(
                    two_stage,
                    images,
                    positive,
                    positive_rate=positive_rate,
                    n=stream_samples,
                    full_runner=full_model,
                )
            result["two_stage"] = {**benchmark.as_dict(stream), "stage1_threads": stage1_threads}
    if plot is not None:
        benchmark.plot_latencies(full, make_parents(plot))
        result["plot"] = os.fspath(plot)
    return result


def stream_images(art: Artifact) -> tuple[np.ndarray, np.ndarray]:
    """Digits test images at the export's size, and which of them are the positive class."""
    assert art.manifest is not None
    shape = art.manifest.extra["example_shapes"]["images"]
    images = datasets.digits("test", size=int(shape[-1]), channels=int(shape[1]))
    assert images.labels is not None
    positive = images.labels.numpy() == int(art.manifest.extra["positive_class"])
    return images.images.numpy(), positive
