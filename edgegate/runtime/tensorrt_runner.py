"""TensorRT as a Runner: an engine built with edgegate's plugin library, run on a CUDA GPU.

Only for machines with TensorRT's Python package and a GPU; elsewhere activating it raises
BackendUnavailable (exit 3) naming what to install. Buffers live in PyTorch CUDA tensors, on a
CUDA stream of the runner's own (not the legacy default stream, which serialises with all work).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgegate.errors import BackendUnavailable, BadInput
from edgegate.exporters.tensorrt.plugin_library import load_plugins
from edgegate.runtime.base import Runner, TensorSpec
from edgegate.runtime.tensorrt_io import (
    Profile,
    batch_limit,
    cast_feed,
    numpy_dtype,
    profile_batch_limit,
    resolved_shape,
)

INSTALL_HINT = (
    "TensorRT's Python package and a CUDA GPU are needed: JetPack on Jetson, or "
    "`pip install tensorrt` from NVIDIA's index with a CUDA build of PyTorch"
)


def import_tensorrt():
    """The ``tensorrt`` module, or BackendUnavailable (exit 3) naming the install."""
    try:
        import tensorrt
    except Exception:  # an ImportError, or bindings that find no libnvinfer
        raise BackendUnavailable(f"TensorRT is not installed: {INSTALL_HINT}") from None
    return tensorrt


def require_gpu():
    """PyTorch's CUDA module when a GPU is usable; BackendUnavailable otherwise."""
    import torch

    if not torch.cuda.is_available():
        raise BackendUnavailable(f"no CUDA GPU is available to TensorRT here: {INSTALL_HINT}")
    return torch


class TensorRTRunner(Runner):
    """An engine on a CUDA stream of its own, fed at most its profile's batch per call (larger
    feeds run in slices, see ``Runner.run``), every input shape checked against the profile and
    every feed cast to the engine's dtypes (``edgegate.runtime.tensorrt_io``)."""

    name = "tensorrt"

    def __init__(
        self, engine: str | os.PathLike[str], plugin_library: str | os.PathLike[str] | None = None
    ) -> None:
        super().__init__()
        self._trt = import_tensorrt()  # fail at once, before any file is read
        self.engine_path = Path(engine)
        self.plugin_library = Path(plugin_library) if plugin_library else None
        self._engine = self._context = self._torch = self._stream = None
        self._names: list[str] = []
        self._profiles: dict[str, Profile] = {}

    def activate(self) -> None:
        trt = self._trt
        self._torch = require_gpu()
        if not self.engine_path.is_file():
            raise BadInput(f"'{self.engine_path}' does not exist: build it with --build")
        logger = trt.Logger(trt.Logger.WARNING)
        if self.plugin_library is not None:
            if not self.plugin_library.is_file():
                raise BadInput(f"plugin library '{self.plugin_library}' does not exist")
            load_plugins(trt, self.plugin_library)  # once per process, the builder's included
        runtime = trt.Runtime(logger)
        self._engine = runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self._engine is None:
            raise BadInput(f"'{self.engine_path}' is not an engine this TensorRT can load")
        self._context = self._engine.create_execution_context()
        self._names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        self._profiles = {
            name: Profile(name, *(tuple(int(d) for d in s)
                                  for s in self._engine.get_tensor_profile_shape(name, 0)))
            for name in self._names
            if self._is_input(name)
        }  # fmt: skip
        self.batch_limit = batch_limit(
            self.batch_limit, profile_batch_limit(list(self._profiles.values()))
        )
        self._stream = self._torch.cuda.Stream()  # not the legacy default stream

    def deactivate(self) -> None:
        self._context = self._engine = self._stream = None

    def _is_input(self, name: str) -> bool:
        return self._engine.get_tensor_mode(name) == self._trt.TensorIOMode.INPUT

    def _dtype(self, name: str) -> np.dtype:
        return numpy_dtype(self._engine.get_tensor_dtype(name).name)

    def input_specs(self) -> list[TensorSpec]:
        return [
            TensorSpec(name, tuple(self._engine.get_tensor_shape(name)), self._dtype(name).name)
            for name in self._names
            if self._is_input(name)
        ]

    def output_names(self) -> list[str]:
        return [name for name in self._names if not self._is_input(name)]

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch, context = self._torch, self._context
        keep, outputs = [], {}
        with torch.cuda.stream(self._stream):  # copies, run and read-back all on our stream
            for name, profile in self._profiles.items():
                if name not in feed:
                    raise BadInput(f"engine '{self.engine_path.name}' needs input '{name}'")
                array = cast_feed(name, feed[name], self._dtype(name))
                refusal = profile.refusal(array.shape)
                if refusal is None and not context.set_input_shape(name, array.shape):
                    refusal = f"TensorRT refused input '{name}' of shape {list(array.shape)}"
                if refusal is not None:
                    raise BadInput(f"{self.engine_path.name}: {refusal}")
                tensor = torch.from_numpy(array).to("cuda", non_blocking=False)
                context.set_tensor_address(name, tensor.data_ptr())
                keep.append(tensor)
            for name in self.output_names():  # shapes resolve once every input shape is set
                shape = resolved_shape(name, tuple(context.get_tensor_shape(name)))
                dtype = torch.from_numpy(np.zeros(0, self._dtype(name))).dtype
                tensor = torch.empty(shape, dtype=dtype, device="cuda")
                context.set_tensor_address(name, tensor.data_ptr())
                outputs[name] = tensor
            if not context.execute_async_v3(self._stream.cuda_stream):
                raise BadInput(f"TensorRT could not run '{self.engine_path.name}' on these inputs")
            host = {name: t.to("cpu") for name, t in outputs.items()}
        self._stream.synchronize()
        return {name: t.numpy() for name, t in host.items()}
