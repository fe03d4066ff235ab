"""Error against time: how far INT8 logits stray from float at each position of a sequence.

A recurrent model carries its state from step to step, so an error made early can grow
along the sequence. Per position t, over every test sequence:
- ``relative_error[t]`` = sum of squared logit errors / sum of squared reference logits, each
  row centred first (softmax ignores a common offset, which would otherwise count as signal);
- ``snr_db[t]`` = -10 log10(relative_error[t]);
- ``top1_agreement[t]``: percent of sequences whose arg-max agrees at t.
The summary averages the relative error over each quarter of the sequence and gives the
growth ratio last quarter / first quarter (1 = no growth).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

QUARTERS = 4


def _centred(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float64)
    return x - x.mean(axis=-1, keepdims=True)


def timestep_errors(reference: np.ndarray, candidate: np.ndarray) -> dict[str, Any]:
    """Per-position SNR, relative error and top-1 agreement of ``candidate`` logits against
    ``reference`` ([N, T, V] each), pooled over the N sequences; with per-quarter means."""
    if reference.shape != candidate.shape or reference.ndim != 3:
        raise ValueError(
            f"timestep errors need two [N, T, V] arrays of one shape, got "
            f"{list(reference.shape)} and {list(candidate.shape)}"
        )
    ref, cand = _centred(reference), _centred(candidate)
    signal = (ref**2).sum(axis=(0, 2))
    noise = ((cand - ref) ** 2).sum(axis=(0, 2))
    relative = noise / np.maximum(signal, np.finfo(np.float64).tiny)
    with np.errstate(divide="ignore"):
        snr = np.where(relative > 0, -10.0 * np.log10(np.maximum(relative, 1e-300)), math.inf)
    agree = 100.0 * (reference.argmax(-1) == candidate.argmax(-1)).mean(axis=0)
    length = reference.shape[1]
    quarters = [
        chunk for chunk in np.array_split(np.arange(length), QUARTERS) if len(chunk)
    ]  # fewer than 4 positions: fewer quarters
    per_quarter = [float(relative[q].mean()) for q in quarters]
    first, last = per_quarter[0], per_quarter[-1]
    growth = last / first if first > 0 else (1.0 if last == 0 else math.inf)
    return {
        "sequences": int(reference.shape[0]),
        "positions": int(length),
        "relative_error": [float(v) for v in relative],
        "snr_db": [float(v) for v in snr],
        "top1_agreement": [float(v) for v in agree],
        "summary": summary_of(per_quarter, growth, relative, snr, agree, quarters),
    }


def summary_of(
    per_quarter: list[float],
    growth: float,
    relative: np.ndarray,
    snr: np.ndarray,
    agree: np.ndarray,
    quarters: list[np.ndarray],
) -> dict[str, Any]:
    """The figures a report shows: per quarter, growth, and where the error is largest."""
    worst = int(np.argmax(relative))
    return {
        "quarter_relative_error": [_round(v) for v in per_quarter],
        "quarter_snr_db": [_round(_db(v)) for v in per_quarter],
        "quarter_top1_agreement": [_round(float(agree[q].mean())) for q in quarters],
        "growth_last_over_first": _round(growth),
        "mean_snr_db": _round(_db(float(relative.mean()))),
        "worst_position": worst,
        "worst_snr_db": _round(float(snr[worst])),
    }


def _db(relative: float) -> float:
    return -10.0 * math.log10(relative) if relative > 0 else math.inf


def _round(value: float) -> float | None:
    """JSON-safe: None for an infinite figure (no error at all)."""
    return None if not math.isfinite(value) else round(float(value), 6)


def plot_timestep(report: dict[str, Any], path: str | os.PathLike[str], title: str) -> Path:
    """PNG of SNR (dB) and top-1 agreement against position, quarter means marked; atomic."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgegate.atomic import save_png

    positions = np.arange(report["positions"])
    snr = np.array([v if math.isfinite(v) else np.nan for v in report["snr_db"]])
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True)
    top.plot(positions, snr, lw=0.8, label="per position")
    bounds = np.array_split(positions, len(report["summary"]["quarter_snr_db"]))
    for chunk, value in zip(bounds, report["summary"]["quarter_snr_db"], strict=True):
        if value is not None and len(chunk):
            top.hlines(value, chunk[0], chunk[-1], colors="C3", lw=2)
    top.plot([], [], color="C3", lw=2, label="quarter mean (of relative error)")
    top.set_ylabel("logit SNR (dB)")
    growth = report["summary"]["growth_last_over_first"]
    shown = "inf" if growth is None else f"{growth:.2f}x"
    top.set_title(f"{title}: error growth last/first quarter {shown}", fontsize=10)
    top.legend(loc="lower left", fontsize=8)
    bottom.plot(positions, report["top1_agreement"], lw=0.8, color="C2")
    bottom.set_ylabel("top-1 agreement (%)")
    bottom.set_xlabel(f"position (mean over {report['sequences']} sequences)")
    fig.tight_layout()
    return save_png(fig, path)
