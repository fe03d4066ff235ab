"""Core ML as a Runner: `predict` on macOS; elsewhere edgegate's numpy emulation of the program.

Core ML's own prediction exists only on macOS. On Linux the same ML Program runs in
`coreml_emulator`, op by op in numpy with the package's dtypes (fp16 where the package computes
in fp16): a check of what was converted, labelled "emulated", never a device result.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from edgegate.errors import BackendUnavailable, BadInput
from edgegate.runtime.base import Runner, TensorSpec

INSTALL_HINT = "pip install 'edgegate-nn[coreml]'"
MAX_BATCH = 64  # a package whose batch is unbounded still runs in slices of this many


def import_coremltools():
    try:
        from edgegate.exporters.coreml.quiet import coremltools

        return coremltools()
    except ImportError:
        raise BackendUnavailable(f"coremltools is not installed: {INSTALL_HINT}") from None


def can_predict() -> bool:
    """Core ML's own prediction: macOS only."""
    return sys.platform == "darwin"


class CoreMLRunner(Runner):
    """An .mlpackage, run by Core ML (macOS) or emulated in numpy (``emulate``, default off
    macOS). ``threads`` does not apply: Core ML schedules its own compute units."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        threads: int | None = None,
        emulate: bool | None = None,
    ) -> None:
        super().__init__()
        import_coremltools()
        self.path = Path(path)
        if not self.path.is_dir():
            raise BadInput(f"'{path}' is not a Core ML package (.mlpackage folder)")
        self.emulated = (not can_predict()) if emulate is None else emulate
        if not self.emulated and not can_predict():
            raise BackendUnavailable("Core ML prediction needs macOS: run emulated instead")
        self.name = "coreml-emulated (numpy)" if self.emulated else "coreml"
        self._model = None
        self._specs: list[TensorSpec] | None = None
        self._outputs: list[str] | None = None
        self._max_batch = MAX_BATCH

    def activate(self) -> None:
        from edgegate.exporters.coreml.inspect import (
            load,
            output_names,
            package_inputs,
            package_ranges,
        )

        first = package_inputs(self.path)[0]
        batch = package_ranges(self.path)[first.name].get(0)
        size = first.shape[0] if isinstance(first.shape[0], int) else None
        self._max_batch = (batch[1] if batch else size) or MAX_BATCH
        self._specs = [
            TensorSpec(s.name, tuple(d if isinstance(d, int) else None for d in s.shape), s.dtype)
            for s in package_inputs(self.path)
        ]
        if self.emulated:
            from edgegate.runtime.coreml_emulator import Emulator

            self._model = Emulator(load(self.path))
            self._outputs = output_names(self.path)
        else:
            self._model = import_coremltools().models.MLModel(os.fspath(self.path))
            self._outputs = output_names(self.path)

    def deactivate(self) -> None:
        self._model = None

    def input_specs(self) -> list[TensorSpec]:
        if self._specs is None:
            self.activate()
        return list(self._specs or [])

    def output_names(self) -> list[str]:
        if self._outputs is None:
            self.activate()
        return list(self._outputs or [])

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._model is None:
            self.activate()
        dtypes = {s.name: s.dtype for s in self.input_specs()}
        cast = {name: np.ascontiguousarray(value, dtype=dtypes.get(name, value.dtype))
                for name, value in feed.items()}  # fmt: skip
        batch = len(next(iter(cast.values())))
        pieces = []
        step = self._max_batch  # the package's own largest batch
        for start in range(0, max(batch, 1), step):
            chunk = {name: value[start : start + step] for name, value in cast.items()}
            out = self._model.run(chunk) if self.emulated else self._model.predict(chunk)
            pieces.append({n: np.asarray(out[n], dtype=np.float32) for n in self.output_names()})
        return {n: np.concatenate([p[n] for p in pieces]) for n in self.output_names()}
