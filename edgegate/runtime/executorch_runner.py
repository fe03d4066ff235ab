"""ExecuTorch as a Runner: a .pte program run by ExecuTorch's runtime (``executorch.runtime``),
XNNPACK delegates and portable kernels, on the host CPU.

Threads. XNNPACK runs on ExecuTorch's process-wide thread pool, which starts with one thread
per logical CPU that cpuinfo counts (capped at 63). From Python the pool's size can be read
(``_threadpool_get_thread_count``) and the pool replaced by one of another size
(``_unsafe_reset_threadpool``), both experimental pybindings. XNNPACK takes the pool's handle
when a method loads, so replacing the pool while a method is loaded would leave that method
a dangling handle. The runner therefore sizes the pool to ``threads`` only while no ExecuTorch
method is loaded in this process; otherwise it runs on the pool as it is. ``threads`` on an
active runner is always the size actually in use (what bench reports).

Batches. A program's memory is planned for its largest input, so a feed with more rows than
the program's batch bound runs in slices of that bound, and the outputs are joined.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from edgegate.errors import BadInput
from edgegate.exporters.executorch import IO_METHOD
from edgegate.libs import captured_stderr, import_optional
from edgegate.runtime.base import Runner, TensorSpec

# executorch's ScalarType codes (runtime/core/portable_type/scalar_type.h) -> numpy names
_SCALAR_TYPES = {
    0: "uint8",
    1: "int8",
    2: "int16",
    3: "int32",
    4: "int64",
    5: "float16",
    6: "float32",
    7: "float64",
    11: "bool",
}
_loaded_methods = 0  # ExecuTorch methods alive in this process (they hold the pool's handle)


def _pybindings():
    return import_optional("executorch.extension.pybindings.portable_lib")


def threadpool_size() -> int:
    """The size of ExecuTorch's thread pool (XNNPACK's threads) in this process."""
    with captured_stderr():  # the first call starts the pool, and cpuinfo logs its probes
        return int(_pybindings()._threadpool_get_thread_count())


def _resize_threadpool(threads: int | None) -> int:
    """Resize the pool to ``threads`` when that is safe (module docstring); its size after."""
    size = threadpool_size()
    if threads is not None and threads != size and _loaded_methods == 0:
        with captured_stderr():
            _pybindings()._unsafe_reset_threadpool(int(threads))
        size = threadpool_size()
    return size


class ExecuTorchRunner(Runner):
    name = "executorch"

    def __init__(self, path: str | os.PathLike[str], threads: int | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        self.requested_threads = threads
        self.threads: int | None = threads
        self._program = self._method = None
        self._inputs: list[dict[str, Any]] = []
        self._outputs: list[str] = []
        self._bounds: list[list[int]] = []
        self._batched = False  # an edgegate program: dim 0 of every input is the batch

    def activate(self) -> None:
        global _loaded_methods
        runtime = import_optional("executorch.runtime")
        if not self.path.is_file():
            raise BadInput(f"'{self.path}' does not exist")
        self.threads = _resize_threadpool(self.requested_threads)
        failure: Exception | None = None
        with captured_stderr() as log:
            try:
                self._program = runtime.Runtime.get().load_program(self.path)
                self._method = self._program.load_method("forward")
            except Exception as exc:  # the runtime's own error types, with its log lines
                failure = exc
        if failure is not None:
            self._program = self._method = None
            reason = log.last_line() or str(failure).strip() or type(failure).__name__
            raise BadInput(f"'{self.path}' is not a loadable ExecuTorch program: {reason}")
        record = self._io_record()
        _loaded_methods += 1
        meta = self._method.metadata
        self._bounds = [list(meta.input_tensor_meta(i).sizes()) for i in range(meta.num_inputs())]
        if record is not None:
            self._inputs, self._outputs, self._batched = record["inputs"], record["outputs"], True
        else:  # a .pte from elsewhere: positional names, every dim up to its planned size
            self._inputs = [
                {
                    "name": f"input{i}",
                    "shape": list(self._bounds[i]),
                    "dtype": _SCALAR_TYPES.get(meta.input_tensor_meta(i).dtype(), "float32"),
                }
                for i in range(meta.num_inputs())
            ]
            self._outputs = [f"output{i}" for i in range(meta.num_outputs())]

    def _io_record(self) -> dict[str, Any] | None:
        if IO_METHOD not in self._program.method_names:
            return None
        try:
            return json.loads(self._program.load_method(IO_METHOD).execute([])[0])
        except (ValueError, IndexError, TypeError):
            return None

    def deactivate(self) -> None:
        global _loaded_methods
        if self._method is not None:
            _loaded_methods = max(0, _loaded_methods - 1)
        self._method = self._program = None

    def _require_active(self) -> None:
        if self._method is None:
            raise RuntimeError("ExecuTorchRunner is used outside its `with` block")

    def input_specs(self) -> list[TensorSpec]:
        self._require_active()
        return [TensorSpec(i["name"], tuple(i["shape"]), i["dtype"]) for i in self._inputs]

    def output_names(self) -> list[str]:
        self._require_active()
        return list(self._outputs)

    def _check(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The feed in the program's input order, after checking names, ranks, dims, dtypes."""
        names = [i["name"] for i in self._inputs]
        missing = [n for n in names if n not in feed]
        if missing:
            raise BadInput(f"'{self.path.name}' needs input(s) {missing}, got {sorted(feed)}")
        extra = [n for n in feed if n not in names]
        if extra:
            raise BadInput(f"'{self.path.name}' has no input(s) {extra} (inputs: {names})")
        arrays = []
        for spec, bound in zip(self._inputs, self._bounds, strict=True):
            array = np.ascontiguousarray(feed[spec["name"]])
            shape, want = list(array.shape), spec["shape"]
            bad = len(shape) != len(want) or any(
                (size != dim if isinstance(dim, int) else not 1 <= size <= limit)
                for d, (size, dim, limit) in enumerate(zip(shape, want, bound, strict=True))
                if not (d == 0 and self._batched)
            )
            if bad:
                pairs = zip(want, bound, strict=False)
                ranges = [d if isinstance(d, int) else f"{d}<={b}" for d, b in pairs]
                raise BadInput(
                    f"input '{spec['name']}' of '{self.path.name}' takes shape {ranges}, "
                    f"got {shape}"
                )
            if array.dtype.name != spec["dtype"]:
                raise BadInput(
                    f"input '{spec['name']}' of '{self.path.name}' expects {spec['dtype']}, "
                    f"got {array.dtype.name}"
                )
            arrays.append(array)
        return arrays

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        self._require_active()
        arrays = self._check(feed)
        rows = len(arrays[0]) if arrays and self._batched else 1
        step = max(1, int(self._bounds[0][0])) if self._batched else max(rows, 1)
        pieces: list[list[np.ndarray]] = []
        for start in range(0, max(rows, 1), step):
            chunk = [a[start : start + step] for a in arrays] if self._batched else arrays
            outs = self._method.execute([torch.from_numpy(np.ascontiguousarray(a)) for a in chunk])
            pieces.append([o.numpy().copy() for o in outs])
        joined = [np.concatenate(parts) for parts in zip(*pieces, strict=True)]
        return dict(zip(self._outputs, joined, strict=True))
