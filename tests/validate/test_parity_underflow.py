"""fp16 parity on outputs below float16's range, and agreement when no row is decisive."""

import numpy as np

from edgegate.pipeline.summary import validation_rows
from edgegate.validate.parity import (
    FP16_SMALLEST_NORMAL,
    Tolerance,
    compare_outputs,
    fp16_underflow,
    top1_agreement,
)


def _tiny_logits(rows: int = 64, classes: int = 10, scale: float = 1e-11) -> np.ndarray:
    """Logits like a randomly initialised torchvision classifier's: about 1e-11."""
    return (np.random.default_rng(0).standard_normal((rows, classes)) * scale).astype(np.float32)


def _as_fp16(values: np.ndarray) -> np.ndarray:
    """What a float16 pipeline hands back: every value rounded through float16."""
    return values.astype(np.float16).astype(np.float32)


def test_fp16_flushed_logits_fail_with_the_reason_and_the_fix():
    ref = _tiny_logits()
    cand = _as_fp16(ref)
    assert not np.any(cand)  # float16 really flushes 1e-11 to zero
    fp16 = Tolerance.for_precision("fp16")
    report = compare_outputs({"logits": ref}, {"logits": cand}, fp16, classifier_outputs={"logits"})
    assert not report.passed
    # below the tolerance's error floor the cosine says nothing; the decisions fail instead
    assert any("top-1 agreement" in f for f in report.failures), report.failures
    hint = [f for f in report.failures if "smallest normal" in f]
    assert len(hint) == 1 and "--precision fp32" in hint[0], report.failures
    assert hint[0].startswith("output 'logits': ")


def test_no_decisive_row_is_not_counted_as_agreement():
    ref = _tiny_logits()  # every row's top two lie within fp16's 1e-2 allowance: all near-ties
    report = compare_outputs(
        {"logits": ref},
        {"logits": _as_fp16(ref)},
        Tolerance.for_precision("fp16"),
        classifier_outputs={"logits"},
    )
    assert report.decisive_top1_agreement is None
    top1 = [f for f in report.failures if "top-1 agreement" in f]
    assert len(top1) == 1 and "no row is decisive" in top1[0], report.failures
    assert "where not a near-tie" not in top1[0]
    rows = dict(validation_rows({**report.to_dict(), "outputs": {}}))
    assert rows["  where not a near-tie"] == "no row is decisive"


def test_top1_agreement_of_an_empty_selection_is_none_not_100():
    ref = np.array([[1.0, 1.001], [2.0, 2.0005]], dtype=np.float32)
    cand = ref[:, ::-1].copy()  # both decisions flip
    assert top1_agreement(ref, cand) == 0.0
    assert top1_agreement(ref, cand, near_tie=0.01) is None


def test_hint_also_when_the_candidate_is_all_zeros_but_the_reference_is_normal_sized():
    ref = np.random.default_rng(1).standard_normal((32, 10)).astype(np.float32)
    report = compare_outputs(
        {"logits": ref},
        {"logits": np.zeros_like(ref)},
        Tolerance.for_precision("fp16"),
        classifier_outputs={"logits"},
    )
    assert any("all zeros" in f and "--precision fp32" in f for f in report.failures)


def test_no_hint_where_fp16_is_not_the_cause():
    ref = _tiny_logits()
    noisy = np.random.default_rng(2).standard_normal(ref.shape).astype(np.float32)
    tol = Tolerance.for_precision("fp32")
    fp32 = compare_outputs({"logits": ref}, {"logits": noisy}, tol, classifier_outputs={"logits"})
    assert not fp32.passed and not any("--precision" in f for f in fp32.failures)
    normal = np.random.default_rng(3).standard_normal((32, 10)).astype(np.float32) * 4
    report = compare_outputs(
        {"logits": normal},
        {"logits": _as_fp16(normal)},
        Tolerance.for_precision("fp16"),
        classifier_outputs={"logits"},
    )
    assert report.passed, report.failures  # normal-sized logits survive float16
    assert fp16_underflow(normal, _as_fp16(normal)) is None


def test_the_threshold_is_float16s_smallest_normal():
    assert float(np.finfo(np.float16).tiny) == FP16_SMALLEST_NORMAL
    below = np.full((2, 3), FP16_SMALLEST_NORMAL / 2, dtype=np.float32)
    above = np.full((2, 3), FP16_SMALLEST_NORMAL * 2, dtype=np.float32)
    assert fp16_underflow(below, below) is not None
    assert fp16_underflow(above, above) is None
    assert fp16_underflow(np.zeros((2, 3)), np.zeros((2, 3))) is None


def test_with_no_decisive_row_the_error_relative_to_the_output_scale_judges():
    ref = _tiny_logits(scale=1e-3)  # int8's absolute floor (4/127) makes every row a near-tie
    int8 = Tolerance.for_precision("int8")
    rows = np.arange(len(ref))
    best, second = ref.argmax(1), np.argsort(ref, 1)[:, -2]
    ref[rows, second] = ref[rows, best] - np.float32(1e-7)  # top two 1e-7 apart
    close = ref.copy()
    close[rows, best], close[rows, second] = ref[rows, second], ref[rows, best]  # swapped
    near = compare_outputs({"logits": ref}, {"logits": close}, int8, classifier_outputs={"logits"})
    assert near.decisive_top1_agreement is None and near.top1_agreement < 100.0
    assert near.passed, near.failures
    far = ref[:, ::-1].copy()  # every decision moved, by the whole output scale
    report = compare_outputs({"logits": ref}, {"logits": far}, int8, classifier_outputs={"logits"})
    assert not report.passed
    assert "of the output's scale" in report.failures[0]
