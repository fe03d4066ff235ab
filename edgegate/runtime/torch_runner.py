"""The PyTorch reference as a Runner, so parity compares it with any backend the same way."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from edgegate.errors import BadInput
from edgegate.runtime.base import Runner, TensorSpec
from edgegate.runtime.feed import check_feed

if TYPE_CHECKING:
    import torch
    from torch import nn


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    import torch

    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16
        t = t.float()
    return t.numpy()


class TorchRunner(Runner):
    """Runs ``module(*inputs)`` in eval mode under no_grad; positional inputs by name.

    ``input_specs`` (optional) turns on the same feed checks ONNX Runtime gets; without
    it only the input names are checked. Outputs beyond ``output_names`` are dropped;
    fewer is an error. ``threads`` (optional) sets torch's intra-op
    threads while the runner is active and restores them on exit.
    """

    name = "torch"

    def __init__(
        self,
        module: nn.Module,
        input_names: Sequence[str],
        output_names: Sequence[str],
        input_specs: Sequence[TensorSpec] | None = None,
        threads: int | None = None,
    ) -> None:
        super().__init__()
        self.module = module.eval()
        self._inputs = list(input_names)
        self._outputs = list(output_names)
        self._specs = list(input_specs) if input_specs is not None else None
        if self._specs is not None and [s.name for s in self._specs] != self._inputs:
            raise ValueError(f"input_specs names {[s.name for s in self._specs]} != {self._inputs}")
        self.threads = threads
        self._saved_threads: int | None = None

    def activate(self) -> None:
        import torch

        if self.threads is not None:
            self._saved_threads = torch.get_num_threads()
            torch.set_num_threads(int(self.threads))

    def deactivate(self) -> None:
        import torch

        if self._saved_threads is not None:
            torch.set_num_threads(self._saved_threads)
            self._saved_threads = None

    def input_specs(self) -> list[TensorSpec]:
        if self._specs is not None:
            return list(self._specs)
        return [TensorSpec(name, (), "") for name in self._inputs]

    def output_names(self) -> list[str]:
        return list(self._outputs)

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        where = type(self.module).__name__
        check_feed(feed, self.input_specs(), where)
        args = [torch.from_numpy(np.ascontiguousarray(feed[name])) for name in self._inputs]
        with torch.no_grad():
            out = self.module(*args)
        outs = tuple(out) if isinstance(out, tuple | list) else (out,)
        if len(outs) < len(self._outputs):
            raise BadInput(
                f"{where} returned {len(outs)} output(s), but {len(self._outputs)} were "
                f"named: {self._outputs}"
            )
        # Extra trailing outputs (e.g. recurrent states) are dropped: only named ones count.
        return {name: _to_numpy(t) for name, t in zip(self._outputs, outs, strict=False)}
