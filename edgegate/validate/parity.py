"""Parity of a candidate's outputs against a reference's, with tolerances set by precision.

Several feeds pool into one report as if every feed's outputs were flattened and
concatenated: max abs error is the worst over all feeds, mean abs error, cosine and SNR
are computed over all elements together, and agreements count rows over all feeds. This
keeps one number per metric, is exact (no "mean of means"), and works for feeds of
different shapes (e.g. two sequence lengths).

Non-finite values: NaN where both sides have NaN, and the same infinity on both sides,
count as agreement and are left out of the error metrics (a two-stage runner's stopped
rows are NaN by design). A non-finite value on one side only is a failure.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from edgegate.errors import BadInput
from edgegate.runtime import Runner

_PRECISION_ALIASES = {
    "fp32": "fp32",
    "float32": "fp32",
    "float": "fp32",
    "fp16": "fp16",
    "float16": "fp16",
    "half": "fp16",
    "bf16": "bf16",
    "bfloat16": "bf16",
    "int8": "int8",
    "qdq": "int8",
}


@dataclass(frozen=True)
class Tolerance:
    """Limits one comparison must meet.

    ``max_abs`` (absolute) bounds the max abs error when set; otherwise the bound is
    ``max_abs_rel * max(1, max|ref|)``, i.e. relative to the output's scale, so a logit
    of 300 is not held to the same absolute error as a probability.
    """

    precision: str
    max_abs_rel: float
    min_cosine: float
    min_top1_agreement: float  # percent
    min_gate_agreement: float  # percent
    max_abs: float | None = None

    def allowed_max_abs(self, ref_peak: float) -> float:
        if self.max_abs is not None:
            return self.max_abs
        return self.max_abs_rel * max(1.0, ref_peak)

    @classmethod
    def for_precision(cls, precision: str, step: float | None = None, steps: int = 4) -> Tolerance:
        """Tight for float vs float; for int8 (fake-quant vs QDQ) ``steps`` quantization steps.

        ``step`` is the output's quantization step (its scale). Without it the int8 bound
        is ``steps/127`` of the output's scale: the step of a symmetric int8 tensor that
        spans ``max|ref|``.
        """
        key = _PRECISION_ALIASES.get(str(precision).lower())
        if key == "fp32":
            return cls("fp32", 1e-4, 0.99999, 100.0, 100.0)
        if key == "fp16":
            return cls("fp16", 1e-2, 0.999, 99.5, 99.5)
        if key == "bf16":
            return cls("bf16", 5e-2, 0.995, 99.0, 99.0)
        if key == "int8":
            if step is not None and not step > 0:
                raise BadInput(f"int8 tolerance: quantization step must be > 0, got {step}")
            absolute = None if step is None else steps * float(step)
            return cls("int8", steps / 127, 0.99, 99.5, 99.5, max_abs=absolute)
        known = ", ".join(sorted(set(_PRECISION_ALIASES.values())))
        raise BadInput(f"unknown precision '{precision}' (known: {known})")


@dataclass
class OutputParity:
    max_abs: float
    mean_abs: float
    cosine: float
    snr_db: float  # inf when the outputs are equal
    allowed_max_abs: float | None = None
    top1_agreement: float | None = None  # percent, classifier outputs only
    gate_agreement: float | None = None  # percent, gate outputs only
    elements: int = 0
    nonfinite_mismatch: int = 0  # NaN/inf on one side only (or different infinities)


@dataclass
class ParityReport:
    passed: bool
    tolerance: Tolerance
    outputs: dict[str, OutputParity] = field(default_factory=dict)
    top1_agreement: float | None = None  # worst over classifier outputs
    gate_agreement: float | None = None  # worst over gate outputs
    failures: list[str] = field(default_factory=list)
    feeds: int = 1

    def to_dict(self) -> dict:
        return {
            "passed": self.passed,
            "precision": self.tolerance.precision,
            "tolerance": asdict(self.tolerance),
            "outputs": {k: asdict(v) for k, v in self.outputs.items()},
            "top1_agreement": self.top1_agreement,
            "gate_agreement": self.gate_agreement,
            "failures": list(self.failures),
            "feeds": self.feeds,
        }


@dataclass
class _Pool:
    """Running sums for one output over several feeds (float64, finite elements only)."""

    elements: int = 0
    sum_abs: float = 0.0
    max_abs: float = 0.0
    dot: float = 0.0
    ref_sq: float = 0.0
    cand_sq: float = 0.0
    err_sq: float = 0.0
    ref_peak: float = 0.0
    nonfinite_mismatch: int = 0
    top1_rows: int = 0
    top1_same: int = 0
    gate_items: int = 0
    gate_same: int = 0

    def add(self, ref: np.ndarray, cand: np.ndarray) -> None:
        r = ref.astype(np.float64, copy=False).ravel()
        c = cand.astype(np.float64, copy=False).ravel()
        finite = np.isfinite(r) & np.isfinite(c)
        same_special = (np.isnan(r) & np.isnan(c)) | (np.isinf(r) & (r == c))
        self.nonfinite_mismatch += int((~finite & ~same_special).sum())
        r, c = r[finite], c[finite]
        err = c - r
        self.elements += int(r.size)
        if r.size:
            self.sum_abs += float(np.abs(err).sum())
            self.max_abs = max(self.max_abs, float(np.abs(err).max()))
            self.ref_peak = max(self.ref_peak, float(np.abs(r).max()))
        self.dot += float(r @ c)
        self.ref_sq += float(r @ r)
        self.cand_sq += float(c @ c)
        self.err_sq += float(err @ err)

    def add_top1(self, ref: np.ndarray, cand: np.ndarray) -> None:
        if ref.ndim == 0 or ref.shape[-1] == 0:
            return
        r = ref.reshape(-1, ref.shape[-1]).astype(np.float64, copy=False)
        c = cand.reshape(-1, cand.shape[-1]).astype(np.float64, copy=False)
        r_ok, c_ok = np.isfinite(r).all(-1), np.isfinite(c).all(-1)
        counted = r_ok | c_ok  # rows non-finite on both sides (stopped samples) are skipped
        same = r_ok & c_ok & (r.argmax(-1) == c.argmax(-1))
        self.top1_rows += int(counted.sum())
        self.top1_same += int(same.sum())

    def add_gate(self, ref: np.ndarray, cand: np.ndarray, threshold: float) -> None:
        with np.errstate(invalid="ignore"):
            same = (ref >= threshold) == (cand >= threshold)  # NaN decides "stop"
        self.gate_items += int(same.size)
        self.gate_same += int(same.sum())

    def result(self, tolerance: Tolerance) -> OutputParity:
        norms = math.sqrt(self.ref_sq) * math.sqrt(self.cand_sq)
        if norms > 0:
            cosine = min(1.0, max(-1.0, self.dot / norms))
        else:  # a zero vector: the same only when both are zero
            cosine = 1.0 if self.err_sq == 0 else 0.0
        if self.err_sq == 0:
            snr = math.inf
        elif self.ref_sq == 0:
            snr = -math.inf
        else:
            snr = round(10 * math.log10(self.ref_sq / self.err_sq), 2)
        return OutputParity(
            max_abs=self.max_abs,
            mean_abs=self.sum_abs / self.elements if self.elements else 0.0,
            cosine=round(cosine, 9),
            snr_db=snr,
            allowed_max_abs=tolerance.allowed_max_abs(self.ref_peak),
            top1_agreement=100.0 * self.top1_same / self.top1_rows if self.top1_rows else None,
            gate_agreement=100.0 * self.gate_same / self.gate_items if self.gate_items else None,
            elements=self.elements,
            nonfinite_mismatch=self.nonfinite_mismatch,
        )


def output_parity(ref: np.ndarray, cand: np.ndarray) -> OutputParity:
    """Error metrics of one output pair of equal shape (no tolerance applied)."""
    pool = _Pool()
    pool.add(np.asarray(ref), np.asarray(cand))
    return pool.result(Tolerance.for_precision("fp32"))


class _Comparison:
    """Pools outputs over feeds, then judges them against one tolerance."""

    def __init__(
        self,
        tolerance: Tolerance,
        gate_outputs: Iterable[str],
        classifier_outputs: Iterable[str],
        gate_threshold: float,
    ) -> None:
        self.tolerance = tolerance
        self.gates, self.classifiers = set(gate_outputs), set(classifier_outputs)
        self.threshold = float(gate_threshold)
        self.pools: dict[str, _Pool] = {}
        self.failures: list[str] = []
        self.feeds = 0

    def add(
        self,
        reference: Mapping[str, np.ndarray],
        candidate: Mapping[str, np.ndarray],
        where: str = "",
    ) -> None:
        """``where`` ends each failure message (e.g. " (feed 3)")."""
        self.feeds += 1
        for name, ref in reference.items():
            if name not in candidate:
                self._fail(f"output '{name}' is missing from the candidate{where}")
                continue
            ref, cand = np.asarray(ref), np.asarray(candidate[name])
            if ref.shape != cand.shape:
                self._fail(
                    f"output '{name}': shape {list(cand.shape)} != reference "
                    f"{list(ref.shape)}{where}"
                )
                continue
            pool = self.pools.setdefault(name, _Pool())
            pool.add(ref, cand)
            if name in self.classifiers:
                pool.add_top1(ref, cand)
            if name in self.gates:
                pool.add_gate(ref, cand, self.threshold)

    def _fail(self, message: str) -> None:
        if message not in self.failures:
            self.failures.append(message)

    def report(self) -> ParityReport:
        tol = self.tolerance
        outputs = {name: pool.result(tol) for name, pool in self.pools.items()}
        failures = list(self.failures)
        for name, m in outputs.items():
            assert m.allowed_max_abs is not None
            if m.nonfinite_mismatch:
                failures.append(
                    f"output '{name}': {m.nonfinite_mismatch} NaN/inf value(s) on one side only"
                )
            if m.max_abs > m.allowed_max_abs:
                failures.append(
                    f"output '{name}': max abs error {m.max_abs:.3g} > {m.allowed_max_abs:.3g}"
                )
            if m.cosine < tol.min_cosine:
                failures.append(f"output '{name}': cosine {m.cosine:.7f} < {tol.min_cosine}")
            if m.top1_agreement is not None and m.top1_agreement < tol.min_top1_agreement:
                failures.append(
                    f"output '{name}': top-1 agreement {m.top1_agreement:.2f} % "
                    f"< {tol.min_top1_agreement} %"
                )
            if m.gate_agreement is not None and m.gate_agreement < tol.min_gate_agreement:
                failures.append(
                    f"output '{name}': gate decisions agree on {m.gate_agreement:.2f} % "
                    f"< {tol.min_gate_agreement} % (threshold {self.threshold})"
                )
        top1 = [m.top1_agreement for m in outputs.values() if m.top1_agreement is not None]
        gate = [m.gate_agreement for m in outputs.values() if m.gate_agreement is not None]
        return ParityReport(
            passed=not failures,
            tolerance=tol,
            outputs=outputs,
            top1_agreement=min(top1) if top1 else None,
            gate_agreement=min(gate) if gate else None,
            failures=failures,
            feeds=self.feeds,
        )


def compare_outputs(
    reference: Mapping[str, np.ndarray],
    candidate: Mapping[str, np.ndarray],
    tolerance: Tolerance,
    gate_outputs: Iterable[str] = frozenset(),
    classifier_outputs: Iterable[str] = frozenset(),
    gate_threshold: float = 0.5,
) -> ParityReport:
    """Every reference output against the candidate's output of the same name.

    A missing output or a shape mismatch is a failure in the report, not an exception;
    candidate outputs the reference lacks are ignored. Classifier outputs also get top-1
    agreement (argmax over the last dim); gate outputs get the percent of decisions
    (value >= ``gate_threshold``) that agree.
    """
    comparison = _Comparison(tolerance, gate_outputs, classifier_outputs, gate_threshold)
    comparison.add(reference, candidate)
    return comparison.report()


def run_parity(
    reference: Runner,
    candidate: Runner,
    feeds: Sequence[Mapping[str, np.ndarray]],
    tolerance: Tolerance | None = None,
    gate_outputs: Iterable[str] = frozenset(),
    classifier_outputs: Iterable[str] = frozenset(),
    gate_threshold: float = 0.5,
) -> ParityReport:
    """Run both runners on every feed and pool the comparison (see the module docstring).

    ``tolerance`` defaults to fp32. Runners that load lazily need not be entered first.
    """
    if not feeds:
        raise BadInput("parity needs at least one feed")
    comparison = _Comparison(
        tolerance or Tolerance.for_precision("fp32"),
        gate_outputs,
        classifier_outputs,
        gate_threshold,
    )
    for i, feed in enumerate(feeds):
        comparison.add(reference.run(dict(feed)), candidate.run(dict(feed)), f" (feed {i})")
    return comparison.report()
