"""A toy target, to show what adding a target takes: this module plus one registry line.

It writes a ``torch.export`` program (``.pt2``) and runs it with PyTorch: a real exporter and a
real runner, small enough to read in a minute.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from edgegate.atomic import atomic_write
from edgegate.manifest import InputSpec
from edgegate.runtime import Runner, TensorSpec
from edgegate.targets.base import ExportedFile, ExportPart, Target

NAMES_FILE = "io_names.json"


class ProgramRunner(Runner):
    name = "torch.export"

    def __init__(self, path: str | os.PathLike[str], threads: int | None = None) -> None:
        super().__init__()
        self.path, self.threads = Path(path), threads
        self._module = None
        self._names: dict[str, list[str]] = {}

    def activate(self) -> None:
        extra = {NAMES_FILE: ""}
        self._module = torch.export.load(self.path, extra_files=extra).module()
        self._names = json.loads(extra[NAMES_FILE])

    def deactivate(self) -> None:
        self._module = None

    def input_specs(self) -> list[TensorSpec]:
        return [TensorSpec(name, (), "float32") for name in self._names["inputs"]]

    def output_names(self) -> list[str]:
        return list(self._names["outputs"])

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [torch.from_numpy(np.ascontiguousarray(feed[n])) for n in self._names["inputs"]]
        with torch.no_grad():
            out = self._module(*args)
        outs = out if isinstance(out, tuple | list) else (out,)
        return {name: o.numpy() for name, o in zip(self.output_names(), outs, strict=True)}


class ToyTarget(Target):
    name = "toy"
    summary = "a torch.export program, run by PyTorch"
    suffix = ".pt2"
    requires = ("torch",)
    install_hint = "pip install torch"

    def export(self, part: ExportPart, directory: Path) -> ExportedFile:
        dims = [{d: torch.export.Dim.AUTO for d in dynamic} for dynamic in part.dynamic_dims]
        # batch 2: torch.export specialises a dim whose example size is 1
        args = tuple(torch.cat([a, a]) for a in part.args)
        program = torch.export.export(part.module.eval(), args, dynamic_shapes=tuple(dims))
        path = directory / self.file_name(part.stem)
        names = {"inputs": part.input_names, "outputs": part.output_names}
        with atomic_write(path) as fh:
            torch.export.save(program, fh, extra_files={NAMES_FILE: json.dumps(names)})
        inputs = [
            InputSpec(name, ["batch", *list(a.shape[1:])], str(a.dtype).split(".")[-1])
            for name, a in zip(part.input_names, part.args, strict=True)
        ]
        return ExportedFile(path, inputs)

    def runner(self, path: str | os.PathLike[str], threads: int | None = None) -> Runner:
        return ProgramRunner(path, threads)


TARGET = ToyTarget()
