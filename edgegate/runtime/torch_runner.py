"""The PyTorch reference as a Runner."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from edgegate.runtime.base import Runner, TensorSpec


class TorchRunner(Runner):
    name = "torch"

    def __init__(self, module: nn.Module, input_names: list[str], output_names: list[str]) -> None:
        super().__init__()
        self.module = module.eval()
        self._inputs = list(input_names)
        self._outputs = list(output_names)
        # a loaded .pt2 program (and its quantized graph) bounds its batch: feed within it
        self.batch_limit = getattr(module, "max_batch", None)

    def input_specs(self) -> list[TensorSpec]:
        return [TensorSpec(name, (), "") for name in self._inputs]

    def output_names(self) -> list[str]:
        return list(self._outputs)

    @torch.no_grad()
    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [torch.from_numpy(np.ascontiguousarray(feed[name])) for name in self._inputs]
        out = self.module(*args)
        outs = out if isinstance(out, tuple | list) else (out,)
        return {
            name: t.detach().float().numpy() for name, t in zip(self._outputs, outs, strict=False)
        }
