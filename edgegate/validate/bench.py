"""Latency benchmarks: warm-up, N timed runs, percentiles, throughput, peak memory.

Timings are each runner's own ``last_latency_ms`` (wall time of one ``run``), so every
backend is timed the same way, feed checks included.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgegate.atomic import atomic_write
from edgegate.errors import BadInput
from edgegate.runtime import Runner, TwoStageRunner


@dataclass
class BenchResult:
    runtime: str
    runs: int
    batch: int
    threads: int | None  # None: the backend's default
    latency_ms: dict[str, float]  # p50, p90, p99, mean, min
    throughput_per_s: float  # samples per second: batch / mean latency
    peak_rss_mb: float  # the whole process's peak resident memory so far
    samples_ms: list[float] = field(default_factory=list)


@dataclass
class StreamResult:
    """Per-sample latency of a two-stage model over a stream with some positives (batch 1).

    ``passed_latency_ms``/``stopped_latency_ms`` are the mean latencies of the samples
    that ran stage 2 and of those stopped at stage 1 (None when there were none).
    """

    positive_rate: float  # asked for
    observed_positive_rate: float  # in the drawn stream
    samples: int
    mean_latency_ms: float
    latency_ms: dict[str, float]
    passed_latency_ms: float | None
    stopped_latency_ms: float | None
    stage1_mean_ms: float
    full_model_latency_ms: float | None
    ratio_to_full: float | None  # mean two-stage latency / mean full-model latency
    stage2_runs: int  # samples that passed the gate
    pass_rate: float  # percent of the stream that passed
    threads: int | None = None
    samples_ms: list[float] = field(default_factory=list)


def peak_rss_mb() -> float:
    """Peak RSS of this process in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return float("nan")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def percentiles(samples: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(samples, dtype=np.float64)
    if arr.size == 0:
        return {k: float("nan") for k in ("p50", "p90", "p99", "mean", "min")}
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])
    return {
        "p50": round(float(p50), 4),
        "p90": round(float(p90), 4),
        "p99": round(float(p99), 4),
        "mean": round(float(arr.mean()), 4),
        "min": round(float(arr.min()), 4),
    }


def _batch_of(feed: Mapping[str, np.ndarray]) -> int:
    for value in feed.values():
        shape = np.shape(value)
        return int(shape[0]) if shape else 1
    return 1


def bench(
    runner: Runner,
    feed: Mapping[str, np.ndarray],
    runs: int = 50,
    warmup: int = 5,
    threads: int | None = None,
) -> BenchResult:
    """``warmup`` untimed runs, then ``runs`` timed ones of the same feed.

    ``threads`` is only recorded (the runner was built with its threads); it defaults
    to ``runner.threads``. The batch is the first input's leading dim.
    """
    if runs < 1:
        raise BadInput(f"bench needs at least 1 timed run, got {runs}")
    if warmup < 0:
        raise BadInput(f"warm-up runs must be >= 0, got {warmup}")
    feed = dict(feed)
    for _ in range(warmup):
        runner.run(feed)
    samples = []
    for _ in range(runs):
        runner.run(feed)
        samples.append(runner.last_latency_ms)
    batch = _batch_of(feed)
    latency = percentiles(samples)
    return BenchResult(
        runtime=runner.name,
        runs=runs,
        batch=batch,
        threads=threads if threads is not None else runner.threads,
        latency_ms=latency,
        throughput_per_s=round(1e3 * batch / latency["mean"], 2) if latency["mean"] > 0 else 0.0,
        peak_rss_mb=round(peak_rss_mb(), 1),
        samples_ms=[round(s, 4) for s in samples],
    )


def stream_order(
    is_positive: np.ndarray, positive_rate: float, n: int, seed: int = 0
) -> np.ndarray:
    """Indices of ``n`` samples drawn (with replacement) so ~``positive_rate`` are positive.

    With no positives (or no negatives) available, the other kind fills the stream; the
    result then reports the observed rate.
    """
    rng = np.random.default_rng(seed)
    positives, negatives = np.flatnonzero(is_positive), np.flatnonzero(~is_positive)
    draw_positive = rng.random(n) < positive_rate
    pos = rng.choice(positives if len(positives) else negatives, n)
    neg = rng.choice(negatives if len(negatives) else positives, n)
    return np.where(draw_positive, pos, neg)


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
    """Feed one sample at a time from a stream with ``positive_rate`` positives.

    With ``full_runner`` (the one-piece model) each sample also runs through it,
    interleaved, so both see the same machine load; ``ratio_to_full`` < 1 is the saving.
    """
    samples = np.asarray(samples)
    is_positive = np.asarray(is_positive).astype(bool).reshape(-1)
    if len(samples) == 0:
        raise BadInput("the two-stage stream needs at least one sample")
    if len(is_positive) != len(samples):
        raise BadInput(f"{len(samples)} samples but {len(is_positive)} positive flags")
    if not 0.0 <= positive_rate <= 1.0:
        raise BadInput(f"positive rate {positive_rate} must lie in [0, 1]")
    if n < 1:
        raise BadInput(f"the stream needs at least 1 sample, got {n}")
    order = stream_order(is_positive, positive_rate, n, seed)
    input_name = runner.input_specs()[0].name
    full_name = full_runner.input_specs()[0].name if full_runner is not None else None
    for i in order[:warmup]:
        runner.run({input_name: samples[i : i + 1]})
        if full_runner is not None:
            full_runner.run({full_name: samples[i : i + 1]})
    times, full_times, stage1, passed = [], [], [], []
    for i in order:
        out = runner.run({input_name: samples[i : i + 1]})
        times.append(runner.last_latency_ms)
        stage1.append(runner.last_stage_ms[0])
        passed.append(bool(np.asarray(out["passed"]).any()))
        if full_runner is not None:
            full_runner.run({full_name: samples[i : i + 1]})
            full_times.append(full_runner.last_latency_ms)
    t, went = np.asarray(times), np.asarray(passed)
    mean = float(t.mean())
    full = float(np.mean(full_times)) if full_times else None
    return StreamResult(
        positive_rate=positive_rate,
        observed_positive_rate=round(float(is_positive[order].mean()), 4),
        samples=n,
        mean_latency_ms=round(mean, 4),
        latency_ms=percentiles(times),
        passed_latency_ms=round(float(t[went].mean()), 4) if went.any() else None,
        stopped_latency_ms=round(float(t[~went].mean()), 4) if (~went).any() else None,
        stage1_mean_ms=round(float(np.mean(stage1)), 4),
        full_model_latency_ms=None if full is None else round(full, 4),
        ratio_to_full=None if not full else round(mean / full, 3),
        stage2_runs=int(went.sum()),
        pass_rate=round(100.0 * float(went.mean()), 2),
        threads=runner.threads,
        samples_ms=[round(s, 4) for s in times],
    )


def as_dict(result: BenchResult | StreamResult) -> dict:
    """The result without per-run samples (those go to the plot, not the report)."""
    out = asdict(result)
    out.pop("samples_ms", None)
    return out


def plot_latencies(
    results: BenchResult | StreamResult | Sequence[BenchResult | StreamResult],
    path: str | Path,
    title: str | None = None,
) -> Path:
    """A PNG of per-run latency, one line per result, with each result's p50 marked.

    Draws on a bare Agg canvas (no pyplot), so it neither needs a display nor changes
    the process's matplotlib backend.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    items = [results] if isinstance(results, BenchResult | StreamResult) else list(results)
    if not items:
        raise BadInput("nothing to plot: no benchmark results")
    fig = Figure(figsize=(7, 3.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for result in items:
        if isinstance(result, StreamResult):
            label = f"two-stage stream ({100 * result.positive_rate:.0f} % positive)"
        else:
            label = f"{result.runtime} (batch {result.batch}, threads {result.threads})"
        (line,) = ax.plot(result.samples_ms, marker=".", linewidth=0.8, label=label)
        ax.axhline(result.latency_ms["p50"], linestyle="--", color=line.get_color(), alpha=0.6)
    ax.set_xlabel("run")
    ax.set_ylabel("latency (ms), dashed: p50")
    ax.set_title(title or "latency per run")
    ax.legend(fontsize="small")
    fig.tight_layout()
    path = Path(path)
    with atomic_write(path) as fh:
        fig.savefig(fh, format="png", dpi=100)
    return path
