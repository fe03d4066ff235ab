"""Parity of a candidate's outputs against a reference's, with tolerances set by precision."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    """max_abs is relative to the output scale: allowed = max_abs_rel * max(1, max|ref|)."""

    precision: str
    max_abs_rel: float
    min_cosine: float
    min_top1_agreement: float  # percent
    min_gate_agreement: float  # percent
    # int8 and fp16: a classifier passes on top-1 agreement alone, since one rounding flip early
    # in the graph moves late logits by several steps without changing any decision. A gate output
    # passes on decision agreement alone for the same reason: a sigmoid's output grid is finer
    # than its input's, so one input step is several output steps near the threshold
    agreement_suffices: bool = False

    def allowed_abs(self, ref: np.ndarray) -> float:
        """The absolute error this tolerance allows on an output like ``ref``."""
        return self.max_abs_rel * max(1.0, float(np.abs(ref).max()) if ref.size else 1.0)

    @classmethod
    def for_precision(cls, precision: str, step: float | None = None) -> Tolerance:
        if precision == "fp32":
            return cls("fp32", 1e-4, 0.99999, 100.0, 100.0)
        if precision == "fp16":  # decisions judge it: half rounding moves a deep logit
            # (gated attention's softmax, say) past 1 % of the scale without changing them
            return cls("fp16", 1e-2, 0.999, 99.5, 99.5, agreement_suffices=True)
        if precision == "int8":  # fake-quant vs QDQ: a few quantization steps
            return cls("int8", 4 * (step or 1 / 127), 0.99, 99.5, 99.5, agreement_suffices=True)
        raise ValueError(f"unknown precision '{precision}'")


@dataclass
class OutputParity:
    max_abs: float
    mean_abs: float
    cosine: float
    snr_db: float


@dataclass
class ParityReport:
    passed: bool
    tolerance: Tolerance
    outputs: dict[str, OutputParity] = field(default_factory=dict)
    top1_agreement: float | None = None
    decisive_top1_agreement: float | None = None
    gate_agreement: float | None = None
    failures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "passed": self.passed,
            "precision": self.tolerance.precision,
            "tolerance": asdict(self.tolerance),
            "outputs": {k: asdict(v) for k, v in self.outputs.items()},
            "top1_agreement": self.top1_agreement,
            "decisive_top1_agreement": self.decisive_top1_agreement,
            "gate_agreement": self.gate_agreement,
            "failures": list(self.failures),
        }


def output_parity(ref: np.ndarray, cand: np.ndarray) -> OutputParity:
    r, c = ref.astype(np.float64).ravel(), cand.astype(np.float64).ravel()
    err = c - r
    norms = np.linalg.norm(r) * np.linalg.norm(c)
    cosine = float(r @ c / norms) if norms > 0 else (1.0 if np.array_equal(r, c) else 0.0)
    noise = float(err @ err)
    snr = math.inf if noise == 0 else 10 * math.log10(max(float(r @ r), 1e-300) / noise)
    return OutputParity(
        max_abs=float(np.abs(err).max()) if err.size else 0.0,
        mean_abs=float(np.abs(err).mean()) if err.size else 0.0,
        cosine=round(cosine, 9),
        snr_db=round(snr, 2) if math.isfinite(snr) else snr,
    )


def top1_agreement(ref: np.ndarray, cand: np.ndarray, near_tie: float = 0.0) -> float | None:
    """Percent of rows (last axis = classes) whose argmax agrees; None when no row is compared.

    Rows whose reference top two lie within ``near_tie`` of each other are left out: there an
    error the tolerance allows may flip the decision, so a flip says nothing about a mismatch.
    A byte LM has many such near-ties (a one-step logit difference decides them), which is
    why INT8 checks also report this "decisive" agreement. When every row is a near-tie there
    is nothing to agree on, which is not 100 % agreement: the answer is None.
    """
    ref2, cand2 = ref.reshape(-1, ref.shape[-1]), cand.reshape(-1, cand.shape[-1])
    agree = ref2.argmax(-1) == cand2.argmax(-1)
    if near_tie > 0 and ref2.shape[-1] > 1:
        top2 = np.sort(ref2, axis=-1)[:, -2:]
        agree = agree[(top2[:, 1] - top2[:, 0]) > near_tie]
    return 100.0 * float(agree.mean()) if agree.size else None


FP16_SMALLEST_NORMAL = float(np.finfo(np.float16).tiny)  # 6.1e-05


def fp16_underflow(ref: np.ndarray, cand: np.ndarray) -> str | None:
    """Why an fp16 candidate may have lost an output to underflow, or None.

    A randomly initialised network can give logits of 1e-11: float16 flushes them to zero
    (or keeps a few subnormal steps), so the cosine reads 0 although nothing is wrong with
    the export, only with the precision.
    """
    peak = float(np.abs(ref).max()) if ref.size else 0.0
    if peak == 0.0:
        return None
    if peak < FP16_SMALLEST_NORMAL:
        return (
            f"the reference's values (max |ref| {peak:.2g}) lie below float16's smallest "
            f"normal {FP16_SMALLEST_NORMAL:.2g}, where fp16 keeps no precision (they flush to "
            "zero or to a few subnormal steps): export with --precision fp32"
        )
    if not np.any(cand):
        return (
            "the candidate is all zeros where the reference is not (float16 underflow "
            "inside the network?): export with --precision fp32"
        )
    return None


def compare_outputs(
    reference: dict[str, np.ndarray],
    candidate: dict[str, np.ndarray],
    tolerance: Tolerance,
    gate_outputs: set[str] | frozenset[str] = frozenset(),
    classifier_outputs: set[str] | frozenset[str] = frozenset(),
    gate_threshold: float = 0.5,
) -> ParityReport:
    report = ParityReport(passed=True, tolerance=tolerance)
    for name, ref in reference.items():
        if name not in candidate:
            report.failures.append(f"output '{name}' is missing from the candidate")
            continue
        ref, cand = np.asarray(ref), np.asarray(candidate[name])
        if ref.shape != cand.shape:
            report.failures.append(f"output '{name}': shape {cand.shape} != reference {ref.shape}")
            continue
        metrics = output_parity(ref, cand)
        report.outputs[name] = metrics
        allowed = tolerance.allowed_abs(ref)
        decision = name in classifier_outputs or name in gate_outputs
        judged_by_agreement = tolerance.agreement_suffices and decision
        if metrics.max_abs > allowed and not judged_by_agreement:
            report.failures.append(
                f"output '{name}': max abs {metrics.max_abs:.3g} > {allowed:.3g}"
            )
        # cosine says something only about a signal above the error the tolerance accepts
        # anyway: a sigmoid's far tail (1e-6) carries float rounding of a few percent
        signal = float(np.sqrt(np.mean(np.square(ref.astype(np.float64))))) if ref.size else 0.0
        if metrics.cosine < tolerance.min_cosine and signal > allowed:
            report.failures.append(
                f"output '{name}': cosine {metrics.cosine:.6f} < {tolerance.min_cosine}"
            )
        if name in classifier_outputs:
            _judge_top1(report, name, ref, cand, allowed)
        if name in gate_outputs:
            agree = 100.0 * float(((ref >= gate_threshold) == (cand >= gate_threshold)).mean())
            report.gate_agreement = agree
            if agree < tolerance.min_gate_agreement:
                report.failures.append(f"output '{name}': gate decisions agree on {agree:.2f} %")
        failed_here = any(f.startswith(f"output '{name}':") for f in report.failures)
        hint = fp16_underflow(ref, cand) if tolerance.precision == "fp16" else None
        if failed_here and hint:
            report.failures.append(f"output '{name}': {hint}")
    report.passed = not report.failures
    return report


def _judge_top1(
    report: ParityReport, name: str, ref: np.ndarray, cand: np.ndarray, near_tie: float
) -> None:
    """Top-1 agreement of a classifier output; where agreement suffices, the decisive rows'
    agreement may pass it too. With no decisive row, agreement cannot judge: the output passes
    if its error is within the tolerance relative to the output's own scale."""
    tolerance = report.tolerance
    agree = top1_agreement(ref, cand)
    report.top1_agreement = agree
    if agree is None:  # no rows at all
        return
    if not tolerance.agreement_suffices:
        if agree < tolerance.min_top1_agreement:
            report.failures.append(f"output '{name}': top-1 agreement {agree:.2f} %")
        return
    decisive = top1_agreement(ref, cand, near_tie=near_tie)
    report.decisive_top1_agreement = decisive
    best = agree if decisive is None else max(agree, decisive)
    if best >= tolerance.min_top1_agreement:
        return
    max_abs = report.outputs[name].max_abs
    # nothing to decide between: the error judges, relative to the output's own scale (the
    # absolute floor that protects small outputs would pass a flushed-to-zero one)
    own_scale = tolerance.max_abs_rel * (float(np.abs(ref).max()) if ref.size else 0.0)
    if decisive is None and max_abs <= own_scale:
        return
    if decisive is None:
        detail = (
            f"; no row is decisive (every reference top two within {near_tie:.3g}) and max abs "
            f"{max_abs:.3g} > {own_scale:.3g}, {tolerance.max_abs_rel:.3g} of the output's scale"
        )
    elif decisive == agree:
        detail = ""
    else:
        detail = f"; {decisive:.2f} % where not a near-tie"
    report.failures.append(f"output '{name}': top-1 agreement {agree:.2f} %{detail}")
