"""Shipped checkpoints: small, safe to load, and they reproduce the metrics they record."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from edgegate.models import WEIGHTS_DIR, display_command, shipped_weights
from edgegate.pipeline.zoo import evaluate

SHIPPED = [
    "mobilenet-v3-se",
    "gc-mobilenet",
    "mobilenet-v3-large-se",
    "qvit",
    "qvit:attention=clipped",
    "qvit:attention=gated",
    "qlm",
    "qlm:attention=clipped",
    "qlm:attention=gated",
]
README = Path(__file__).resolve().parents[2] / "README.md"
# The full-size CNN (4.2 M params) ships as float16; every other checkpoint stays under 2 MB.
SIZE_LIMIT_MB = {"mobilenet-v3-large-se": 9.0}


def _headline(metrics: dict) -> tuple[str, float]:
    return (
        ("perplexity", metrics["perplexity"])
        if "perplexity" in metrics
        else ("top1", metrics["top1"])
    )


@pytest.mark.parametrize("spec", SHIPPED)
def test_shipped_checkpoint_loads_safely_and_is_small(spec):
    path = shipped_weights(spec)
    assert path is not None, f"no shipped weights for {spec} in {WEIGHTS_DIR}"
    assert path.stat().st_size < SIZE_LIMIT_MB.get(spec, 2.0) * 1024 * 1024
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["spec"] == spec
    assert checkpoint["extra"]["command"].startswith(f"edgegate train {spec}")


@pytest.mark.parametrize("spec", SHIPPED)
def test_shipped_checkpoint_reproduces_recorded_metrics(spec):
    result = evaluate(spec)
    name, measured = _headline(result["metrics"])
    _, recorded = _headline(result["recorded_metrics"])
    if name == "top1":
        assert abs(measured - recorded) <= 0.5, (measured, recorded)
    else:  # perplexity: within 0.5 %
        assert measured == pytest.approx(recorded, rel=5e-3)


@pytest.mark.parametrize("spec", SHIPPED)
def test_readme_model_table_matches_the_checkpoint(spec):
    """The README's figures are the checkpoint's own record, not hand-typed numbers."""
    row = next(
        (line for line in README.read_text().splitlines() if line.startswith(f"| `{spec}` |")),
        None,
    )
    assert row is not None, f"README model table has no row for {spec}"
    recorded = torch.load(shipped_weights(spec), weights_only=True)
    name, value = _headline(recorded["metrics"])
    figure = float(re.search(rf"{name} ([0-9.]+)", row).group(1))
    assert figure == pytest.approx(value, abs=0.01)
    assert display_command(recorded["extra"]["command"]) in row
