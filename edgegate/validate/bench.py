"""Latency benchmarks: warm-up, N timed runs, percentiles, throughput, peak memory."""

from __future__ import annotations

import resource
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgegate.atomic import save_png
from edgegate.runtime import Runner, TwoStageRunner


@dataclass
class BenchResult:
    runtime: str
    runs: int
    batch: int
    threads: int | None
    latency_ms: dict[str, float]
    throughput_per_s: float
    peak_rss_mb: float
    samples_ms: list[float]


@dataclass
class StreamResult:
    """Mean latency per sample of a two-stage model over a stream with some positives."""

    positive_rate: float
    samples: int
    mean_latency_ms: float
    full_model_latency_ms: float | None
    ratio_to_full: float | None
    stage2_runs: int
    # Noise-robust: each kind of sample (stopped at stage 1, passed to stage 2) by its median,
    # weighted by how often the stream has it, over the full model's median. A sub-millisecond
    # mean is at the mercy of a few scheduler stalls; this is not.
    median_ratio_to_full: float | None = None


def peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def _percentiles(samples: list[float]) -> dict[str, float]:
    arr = np.asarray(samples)
    return {
        "p50": round(float(np.percentile(arr, 50)), 4),
        "p90": round(float(np.percentile(arr, 90)), 4),
        "p99": round(float(np.percentile(arr, 99)), 4),
        "mean": round(float(arr.mean()), 4),
        "min": round(float(arr.min()), 4),
    }


def bench(
    runner: Runner,
    feed: dict[str, np.ndarray],
    runs: int = 50,
    warmup: int = 5,
    on_run: Callable[[int], None] | None = None,
) -> BenchResult:
    """``warmup`` untimed runs, then ``runs`` timed ones; ``on_run(done)`` after each."""
    for i in range(warmup):
        runner.run(feed)
        if on_run is not None:
            on_run(i + 1)
    samples = []
    for i in range(runs):
        runner.run(feed)
        samples.append(runner.last_latency_ms)
        if on_run is not None:
            on_run(warmup + i + 1)
    batch = int(next(iter(feed.values())).shape[0]) if feed else 1
    latency = _percentiles(samples)
    return BenchResult(
        runtime=runner.name,
        runs=runs,
        batch=batch,
        threads=getattr(runner, "threads", None),
        latency_ms=latency,
        throughput_per_s=round(1e3 * batch / latency["mean"], 2) if latency["mean"] > 0 else 0.0,
        peak_rss_mb=round(peak_rss_mb(), 1),
        samples_ms=[round(s, 4) for s in samples],
    )


def bench_two_stage(
    runner: TwoStageRunner,
    samples: np.ndarray,
    is_positive: np.ndarray,
    positive_rate: float = 0.10,
    n: int = 200,
    seed: int = 0,
    full_runner: Runner | None = None,
    warmup: int = 5,
) -> StreamResult:
    """Feed one sample at a time, drawn so that ``positive_rate`` of the stream is positive."""
    rng = np.random.default_rng(seed)
    positives, negatives = np.flatnonzero(is_positive), np.flatnonzero(~is_positive)
    draw_positive = rng.random(n) < positive_rate
    order = np.where(
        draw_positive,
        rng.choice(positives, n) if len(positives) else rng.choice(negatives, n),
        rng.choice(negatives, n) if len(negatives) else rng.choice(positives, n),
    )
    input_name = runner.input_specs()[0].name
    full_name = full_runner.input_specs()[0].name if full_runner is not None else None
    for i in order[:warmup]:
        runner.run({input_name: samples[i : i + 1]})
        if full_runner is not None:
            full_runner.run({full_name: samples[i : i + 1]})
    times, full_times, stage2, passed = [], [], 0, []
    # Interleaved, so both see the same machine load at the same moments.
    for i in order:
        out = runner.run({input_name: samples[i : i + 1]})
        times.append(runner.last_latency_ms)
        passed.append(bool(out["passed"].any()))
        stage2 += int(out["passed"].sum())
        if full_runner is not None:
            full_runner.run({full_name: samples[i : i + 1]})
            full_times.append(full_runner.last_latency_ms)
    mean = float(np.mean(times))
    full = float(np.mean(full_times)) if full_times else None
    return StreamResult(
        positive_rate=positive_rate,
        samples=n,
        mean_latency_ms=round(mean, 4),
        full_model_latency_ms=None if full is None else round(full, 4),
        ratio_to_full=None if not full else round(mean / full, 3),
        stage2_runs=stage2,
        median_ratio_to_full=_median_ratio(times, passed, full_times),
    )


def _median_ratio(times: list[float], passed: list[bool], full_times: list[float]) -> float | None:
    """Stream cost from each kind of sample's median, weighted by its share, over the full
    model's median (see ``StreamResult.median_ratio_to_full``)."""
    if not full_times:
        return None
    by_kind = [[t for t, p in zip(times, passed, strict=True) if p == kind] for kind in (0, 1)]
    cost = sum(len(ts) * float(np.median(ts)) for ts in by_kind if ts) / len(times)
    return round(cost / float(np.median(full_times)), 3)


def as_dict(result: BenchResult | StreamResult) -> dict:
    out = asdict(result)
    out.pop("samples_ms", None)
    return out


def plot_latencies(result: BenchResult, path: str | Path) -> Path:
    """A PNG of per-run latency with the percentiles marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(result.samples_ms, marker=".", linewidth=0.8)
    for key, style in (("p50", "--"), ("p99", ":")):
        ax.axhline(result.latency_ms[key], linestyle=style, color="gray", label=key)
    ax.set_xlabel("run")
    ax.set_ylabel("latency (ms)")
    ax.set_title(f"{result.runtime}: batch {result.batch}, threads {result.threads}")
    ax.legend()
    fig.tight_layout()
    return save_png(fig, path)
