"""`edgegate bench`: latency, throughput and peak memory of an export on its target."""

# No `from __future__ import annotations`: Typer reads the parameters' Annotated types.
from pathlib import Path
from typing import Annotated

import typer

from edgegate.cli.console import print_result, progress_display
from edgegate.cli.options import ArtifactArg, Choices, JsonOpt, ThreadsOpt


def bench(
    artifact: ArtifactArg,
    runs: Annotated[int, typer.Option(min=1, help="Timed runs after warm-up.")] = 50,
    warmup: Annotated[int, typer.Option(min=0)] = 5,
    threads: ThreadsOpt = 2,
    batch: Annotated[int, typer.Option(min=1)] = 1,
    positive_rate: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="Share of positives in the GC two-stage stream."),
    ] = 0.10,
    stage1_threads: Annotated[
        int,
        typer.Option(
            "--stage1-threads",
            min=1,
            help="Threads of the GC always-on stage 1 (stage 2 gets --threads).",
        ),
    ] = 1,
    plot: Annotated[Path | None, typer.Option("--plot", help="Write a PNG latency plot.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Latency (p50/p90/p99/mean), throughput and peak memory of an export on its target.

    Examples:

    - `edgegate bench out/gc --runs 200 --plot latency.png`
    - `edgegate bench out/qlm --threads 1 --batch 4 --json`
    """
    from edgegate.pipeline.bench import bench as run_bench
    from edgegate.pipeline.summary import bench_rows

    with progress_display() as progress:
        result = run_bench(
            artifact,
            runs=runs,
            warmup=warmup,
            threads=threads,
            batch=batch,
            positive_rate=positive_rate,
            stage1_threads=stage1_threads,
            plot=plot,
            progress=progress,
        )
    print_result(result, json_out, bench_rows)


def register(app: typer.Typer, choices: Choices) -> None:
    app.command()(bench)
