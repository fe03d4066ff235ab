"""A gated-compression model deployed as two stages: stage 2 runs only past the gate.

This is the point of gated compression on an always-on core: most samples are negatives,
stage 1 stops them, and the costly stage 2 runs on the few that pass.
"""

from __future__ import annotations

import numpy as np

from edgegate.errors import BadInput
from edgegate.runtime.base import Runner, TensorSpec

OutputRef = str | int  # an output's name, or its position in the runner's output_names()


def _pick(runner: Runner, outputs: dict[str, np.ndarray], ref: OutputRef) -> np.ndarray:
    if isinstance(ref, int):
        names = list(outputs)
        if not -len(names) <= ref < len(names):
            raise BadInput(f"{runner.name} has {len(names)} output(s) {names}; no output #{ref}")
        return outputs[names[ref]]
    if ref not in outputs:
        raise BadInput(f"{runner.name} has no output '{ref}' (outputs: {list(outputs)})")
    return outputs[ref]


class TwoStageRunner(Runner):
    """Stage 1 gives (gate_prob, features); samples with gate_prob < ``threshold`` stop there.

    Stage 2 runs once per call on the batch of passed rows only, and not at all when none
    pass. Outputs: ``gate_prob`` [B], ``passed`` bool [B], ``logits`` [B, C] with NaN rows
    for stopped samples. ``last_stage_ms`` = (stage 1, stage 2) wall times of the last run
    (stage 2 is 0.0 when skipped); ``stage2_calls``/``stage2_rows`` count stage-2 work.
    ``num_classes`` sizes the NaN logits when no sample has passed yet; otherwise it is
    taken from stage 2's output signature or its first real output (else C = 0).
    """

    name = "two-stage"

    def __init__(
        self,
        stage1: Runner,
        stage2: Runner,
        threshold: float = 0.5,
        gate_output: OutputRef = 0,
        features_output: OutputRef = 1,
        logits_output: OutputRef = 0,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        self.stage1, self.stage2 = stage1, stage2
        self.threshold = float(threshold)
        self.gate_output, self.features_output = gate_output, features_output
        self.logits_output = logits_output
        self.num_classes = num_classes
        self.threads = stage1.threads
        self.last_stage_ms = (float("nan"), float("nan"))
        self.stage2_calls = 0
        self.stage2_rows = 0

    def activate(self) -> None:
        self.stage1.__enter__()
        try:
            self.stage2.__enter__()
        except BaseException:
            self.stage1.__exit__(None, None, None)
            raise
        if self.num_classes is None:
            self.num_classes = self._declared_classes()

    def deactivate(self) -> None:
        try:
            self.stage2.__exit__(None, None, None)
        finally:
            self.stage1.__exit__(None, None, None)

    def _declared_classes(self) -> int | None:
        """C from stage 2's output signature, when the backend knows it statically."""
        specs_of = getattr(self.stage2, "output_specs", None)
        if specs_of is None:
            return None
        specs: list[TensorSpec] = specs_of()
        ref = self.logits_output
        match = (
            specs[ref]
            if isinstance(ref, int) and -len(specs) <= ref < len(specs)
            else next((s for s in specs if s.name == ref), None)
        )
        if match is None or not match.shape or not isinstance(match.shape[-1], int):
            return None
        return int(match.shape[-1])

    def input_specs(self) -> list[TensorSpec]:
        return self.stage1.input_specs()

    def output_names(self) -> list[str]:
        return ["gate_prob", "passed", "logits"]

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        first = self.stage1.run(feed)
        gate = np.asarray(_pick(self.stage1, first, self.gate_output)).reshape(-1)
        features = np.asarray(_pick(self.stage1, first, self.features_output))
        if features.ndim == 0 or len(features) != len(gate):
            raise BadInput(
                f"{self.stage1.name}: {len(gate)} gate value(s) but features of shape "
                f"{list(features.shape)}; stage 1 must give one gate per sample"
            )
        passed = gate >= self.threshold  # NaN gates stop: never pay stage 2 for garbage
        stage2_ms = 0.0
        if passed.any():
            rows = np.ascontiguousarray(features[passed])
            second = self.stage2.run({self.stage2.input_specs()[0].name: rows})
            stage2_ms = self.stage2.last_latency_ms
            part = np.asarray(_pick(self.stage2, second, self.logits_output))
            self.num_classes = int(part.shape[-1]) if part.ndim else 1
            dtype = np.result_type(part.dtype, np.float32)
            logits = np.full((len(gate), *part.shape[1:]), np.nan, dtype=dtype)
            logits[passed] = part
            self.stage2_calls += 1
            self.stage2_rows += int(passed.sum())
        else:
            logits = np.full((len(gate), self.num_classes or 0), np.nan, dtype=np.float32)
        self.last_stage_ms = (self.stage1.last_latency_ms, stage2_ms)
        return {"gate_prob": gate, "passed": passed, "logits": logits}
