"""A gated-compression model deployed as two stages: stage 2 runs only past the gate."""

from __future__ import annotations

import time

import numpy as np

from edgegate.runtime.base import Runner, TensorSpec


class TwoStageRunner(Runner):
    """Stage 1 gives (gate_prob, features); samples below ``threshold`` stop there.

    Outputs: ``gate_prob`` [B], ``passed`` bool [B], and ``logits`` [B, C] with NaN rows
    for stopped samples. ``last_stage_ms`` holds the two stages' times of the last run.
    Both stages are set ``idle_between_runs``: an always-on system is called at intervals
    (stage 2 rarely), so worker threads that spin between calls would only burn the cores.
    """

    name = "two-stage"

    def __init__(
        self,
        stage1: Runner,
        stage2: Runner,
        threshold: float = 0.5,
        gate_output: str = "gate_prob",
        features_output: str = "features",
    ) -> None:
        super().__init__()
        self.stage1, self.stage2 = stage1, stage2
        stage1.idle_between_runs = stage2.idle_between_runs = True
        self.threshold = float(threshold)
        self.gate_output, self.features_output = gate_output, features_output
        self.last_stage_ms = (0.0, 0.0)
        self.num_classes: int | None = None

    def deactivate(self) -> None:
        self.stage2.__exit__(None, None, None)
        self.stage1.__exit__(None, None, None)

    def input_specs(self) -> list[TensorSpec]:
        return self.stage1.input_specs()

    def output_names(self) -> list[str]:
        return ["gate_prob", "passed", "logits"]

    def activate(self) -> None:
        self.stage1.__enter__()
        self.stage2.__enter__()
        self._stage2_input = self.stage2.input_specs()[0].name

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        first = self.stage1.run(feed)
        gate = np.asarray(first[self.gate_output]).reshape(-1)
        passed = gate >= self.threshold
        t1 = (time.perf_counter() - start) * 1e3
        logits = None
        if passed.any():
            features = np.ascontiguousarray(first[self.features_output][passed])
            second = self.stage2.run({self._stage2_input: features})
            passed_logits = next(iter(second.values()))
            self.num_classes = passed_logits.shape[-1]
            logits = np.full((len(gate), self.num_classes), np.nan, dtype=passed_logits.dtype)
            logits[passed] = passed_logits
        elif self.num_classes is not None:
            logits = np.full((len(gate), self.num_classes), np.nan, dtype=np.float32)
        else:
            logits = np.full((len(gate), 0), np.nan, dtype=np.float32)
        self.last_stage_ms = (t1, (time.perf_counter() - start) * 1e3 - t1)
        return {"gate_prob": gate, "passed": passed, "logits": logits}
