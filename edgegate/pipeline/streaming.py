"""Streaming exports of scan language models: the step ``(tokens, *states) -> (logits,
*new_states)`` as the graph, with every layer's recurrent state an explicit input and output.

A deployed stream feeds a sequence in pieces and passes each call's new states to the next
call. Scoring and judging run the graph over whole windows from zero states (one pass), which
the stream equals (``tests/pipeline/test_streaming.py``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from edgegate.errors import BadInput
from edgegate.models import LoadedModel
from edgegate.pipeline.tasks import Predict
from edgegate.quant.graph import STATE_INPUT
from edgegate.runtime import Runner

TOKENS = "tokens"


class Streaming:
    """The state inputs and outputs of one scan LM's streaming step."""

    def __init__(self, loaded: LoadedModel) -> None:
        lm = loaded.module
        if not (callable(getattr(lm, "streaming", None)) and hasattr(lm, "init_states")):
            raise BadInput(
                f"--streaming needs a scan language model (gla-lm, hgrn-lm, gdn-lm): "
                f"'{loaded.spec}' carries no recurrent state between calls"
            )
        self.lm = lm.eval()
        self.count = len(lm.init_states(1))
        self.state_inputs = [STATE_INPUT.format(i) for i in range(self.count)]
        self.state_outputs = [f"new_{name}" for name in self.state_inputs]

    def module(self) -> nn.Module:
        """The float streaming step (shares the LM's weights)."""
        return self.lm.streaming().eval()

    def init_states(self, batch: int) -> tuple[torch.Tensor, ...]:
        return self.lm.init_states(batch)

    def names(self) -> tuple[list[str], list[str]]:
        return [TOKENS, *self.state_inputs], ["logits", *self.state_outputs]

    def example(self, tokens: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (tokens, *self.init_states(tokens.shape[0]))

    def dynamic_dims(self, token_dims: tuple[int, ...]) -> list[tuple[int, ...]]:
        """Tokens: batch and length; each state: batch (its other dims are the layer's)."""
        return [token_dims, *[(0,)] * self.count]

    def zero_feed(self, tokens: np.ndarray) -> dict[str, np.ndarray]:
        """An ONNX feed of ``tokens`` from zero states (one pass over whole windows)."""
        states = self.init_states(len(tokens))
        feed = {TOKENS: np.ascontiguousarray(tokens)}
        feed.update({n: s.numpy() for n, s in zip(self.state_inputs, states, strict=True)})
        return feed

    def torch_predict(self, module: nn.Module) -> Predict:
        """A streaming module as a predict callable over whole windows: logits only."""

        @torch.no_grad()
        def predict(batch: np.ndarray) -> list[np.ndarray]:
            tokens = torch.from_numpy(np.ascontiguousarray(batch))
            return [module(tokens, *self.init_states(len(batch)))[0].float().numpy()]

        return predict

    def runner_predict(self, runner: Runner) -> Predict:
        """A streaming export's runner as a predict callable over whole windows: logits."""

        def predict(batch: np.ndarray) -> list[np.ndarray]:
            return [runner.run(self.zero_feed(batch))["logits"]]

        return predict
