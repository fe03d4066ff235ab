"""Error per position (`edgegate.validate.timestep`): SNR, top-1 agreement, quarters, growth."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgegate.validate.timestep import plot_timestep, timestep_errors


def _logits(n=6, t=40, v=16, seed=0):
    return np.random.default_rng(seed).standard_normal((n, t, v)).astype(np.float32)


def test_identical_logits_have_no_error_and_no_growth():
    ref = _logits()
    report = timestep_errors(ref, ref.copy())
    assert all(math.isinf(v) for v in report["snr_db"])
    assert report["top1_agreement"] == [100.0] * 40
    summary = report["summary"]
    assert summary["quarter_relative_error"] == [0.0] * 4
    assert summary["growth_last_over_first"] == 1.0
    assert summary["quarter_snr_db"] == [None] * 4  # infinite: JSON has no inf


@settings(max_examples=25, deadline=None)
@given(eps=st.floats(1e-3, 0.5), offset=st.floats(-50, 50))
def test_scaled_logits_have_the_snr_of_the_scale_and_offsets_do_not_count(eps, offset):
    """(1 + eps) ref + c: the error is eps ref (a common offset changes no softmax), so every
    position's SNR is -20 log10(eps)."""
    ref = _logits()
    report = timestep_errors(ref, (1 + eps) * ref + np.float32(offset))
    np.testing.assert_allclose(report["snr_db"], -20 * math.log10(eps), atol=0.05)
    assert report["summary"]["growth_last_over_first"] == pytest.approx(1.0, abs=1e-3)


@settings(max_examples=20, deadline=None)
@given(growth=st.floats(1.0, 8.0), seed=st.integers(0, 1000))
def test_noise_that_grows_along_the_sequence_shows_in_the_quarters(growth, seed):
    """Noise whose power rises linearly from 1 to ``growth`` along the sequence: the quarter
    means rise in order, and last/first is near the ratio of the quarters' mean powers."""
    t = 400
    ref = _logits(n=32, t=t, v=64, seed=seed)
    power = np.linspace(1.0, growth, t)
    noise = np.random.default_rng(seed + 1).standard_normal(ref.shape) * 0.01
    cand = ref + (noise * np.sqrt(power)[None, :, None]).astype(np.float32)
    report = timestep_errors(ref, cand)
    quarters = [power[i * 100 : (i + 1) * 100].mean() for i in range(4)]
    expected = quarters[-1] / quarters[0]
    assert report["summary"]["growth_last_over_first"] == pytest.approx(expected, rel=0.05)
    if growth > 2:
        q = report["summary"]["quarter_relative_error"]
        assert q == sorted(q)


def test_top1_agreement_counts_flips_per_position():
    ref = _logits(n=4, t=8)
    cand = ref.copy()
    cand[:, 5] = -cand[:, 5]  # flips every arg-max at position 5 (almost surely)
    cand[0, 2] = -cand[0, 2]  # one of four sequences at position 2
    agree = timestep_errors(ref, cand)["top1_agreement"]
    assert agree[5] == 0.0 and agree[2] == 75.0 and agree[0] == 100.0


def test_short_sequences_have_fewer_quarters():
    report = timestep_errors(_logits(t=3), _logits(t=3, seed=1))
    assert len(report["summary"]["quarter_relative_error"]) == 3


def test_mismatched_shapes_raise():
    with pytest.raises(ValueError, match="one shape"):
        timestep_errors(_logits(t=8), _logits(t=9))


def test_plot_is_a_png_written_whole(tmp_path):
    ref = _logits()
    report = timestep_errors(ref, ref + 0.01 * _logits(seed=3))
    path = plot_timestep(report, tmp_path / "ts.png", "toy")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["ts.png"]  # no temporary left behind
