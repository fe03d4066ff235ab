"""Streaming exports of language models that carry state: the step ``(tokens, *states) ->
(logits, *new_states)`` as the graph, with every layer's state an explicit input and output.

Zoo scan LMs carry one recurrent state per layer; ``hf:`` causal LMs carry transformers'
cache as tensors (``edgegate.models.hf_streaming``: conv and recurrent states, and KV caches,
whose length grows with the stream and is a dynamic dim of the graph).

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
from edgegate.quant.calibrate import piece_bounds
from edgegate.quant.graph import STATE_INPUT
from edgegate.runtime import Runner

TOKENS = "tokens"
REPORT_PIECES = 4  # the timestep report of a streaming export feeds each window in 4 calls


class Streaming:
    """The state inputs and outputs of one LM's streaming step.

    The LM gives ``init_states(batch)`` and ``streaming()``; optionally
    ``state_dynamic_dims()`` (dims of each state that vary, batch otherwise) and
    ``example_states(batch)`` (states to trace with, zeros otherwise)."""

    def __init__(self, loaded: LoadedModel) -> None:
        lm = loaded.module
        if not (callable(getattr(lm, "streaming", None)) and hasattr(lm, "init_states")):
            raise BadInput(
                f"--streaming needs a scan language model (gla-lm, hgrn-lm, gdn-lm) or an hf: "
                f"causal LM: '{loaded.spec}' carries no recurrent state between calls"
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
        """Inputs to trace with: zero states, or the LM's ``example_states`` (a KV cache
        after a short prefill: an empty one would be traced as the constant 0)."""
        example_states = getattr(self.lm, "example_states", None)
        batch = tokens.shape[0]
        states = example_states(batch) if callable(example_states) else self.init_states(batch)
        return (tokens, *states)

    def dynamic_dims(self, token_dims: tuple[int, ...]) -> list[tuple[int, ...]]:
        """Tokens: batch and length; each state: batch, and what the LM says varies (a KV
        cache's length); its other dims are the layer's."""
        reported = getattr(self.lm, "state_dynamic_dims", None)
        states = reported() if callable(reported) else [(0,)] * self.count
        return [token_dims, *states]

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

    def runner_predict(self, runner: Runner, pieces: int = 1) -> Predict:
        """A streaming export's runner as a predict callable over whole windows: logits.
        With ``pieces`` > 1 each window is fed as a stream is, in that many calls, each
        call's new states fed back as the next call's states."""

        def predict(batch: np.ndarray) -> list[np.ndarray]:
            feed = self.zero_feed(batch)
            logits = []
            for start, stop in piece_bounds(batch.shape[1], pieces, 0):
                out = runner.run({**feed, TOKENS: np.ascontiguousarray(batch[:, start:stop])})
                logits.append(out["logits"])
                feed.update({n: out[f"new_{n}"] for n in self.state_inputs})
            return [np.concatenate(logits, 1)]

        return predict

    def stream_logits(self, runner: Runner, tokens: np.ndarray, pieces: int) -> np.ndarray:
        """Logits of ``tokens`` [N, T] fed in ``pieces`` with the state carried (batches of 32)."""
        predict = self.runner_predict(runner, pieces)
        return np.concatenate([predict(tokens[i : i + 32])[0] for i in range(0, len(tokens), 32)])
