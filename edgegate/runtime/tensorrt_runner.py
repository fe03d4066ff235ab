"""TensorRT as a Runner: an engine built with edgegate's plugin library, run on a CUDA GPU.

Only for machines with TensorRT's Python package and a GPU; elsewhere activating it raises
BackendUnavailable (exit 3) naming what to install. Buffers live in PyTorch CUDA tensors.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgegate.errors import BackendUnavailable, BadInput
from edgegate.runtime.base import Runner, TensorSpec

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
    name = "tensorrt"

    def __init__(
        self, engine: str | os.PathLike[str], plugin_library: str | os.PathLike[str] | None = None
    ) -> None:
        super().__init__()
        self._trt = import_tensorrt()  # fail at once, before any file is read
        self.engine_path = Path(engine)
        self.plugin_library = Path(plugin_library) if plugin_library else None
        self._engine = self._context = self._torch = None
        self._names: list[str] = []

    def activate(self) -> None:
        trt = self._trt
        self._torch = require_gpu()
        if not self.engine_path.is_file():
            raise BadInput(f"'{self.engine_path}' does not exist: build it with --build")
        logger = trt.Logger(trt.Logger.WARNING)
        if self.plugin_library is not None:
            if not self.plugin_library.is_file():
                raise BadInput(f"plugin library '{self.plugin_library}' does not exist")
            trt.get_plugin_registry().load_library(os.fspath(self.plugin_library))
        runtime = trt.Runtime(logger)
        self._engine = runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self._engine is None:
            raise BadInput(f"'{self.engine_path}' is not an engine this TensorRT can load")
        self._context = self._engine.create_execution_context()
        self._names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]

    def deactivate(self) -> None:
        self._context = self._engine = None

    def _is_input(self, name: str) -> bool:
        return self._engine.get_tensor_mode(name) == self._trt.TensorIOMode.INPUT

    def input_specs(self) -> list[TensorSpec]:
        return [
            TensorSpec(
                name,
                tuple(self._engine.get_tensor_shape(name)),
                np.dtype(self._trt.nptype(self._engine.get_tensor_dtype(name))).name,
            )
            for name in self._names
            if self._is_input(name)
        ]

    def output_names(self) -> list[str]:
        return [name for name in self._names if not self._is_input(name)]

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        keep = []
        for spec in self.input_specs():
            if spec.name not in feed:
                raise BadInput(f"engine '{self.engine_path.name}' needs input '{spec.name}'")
            tensor = torch.from_numpy(np.ascontiguousarray(feed[spec.name])).cuda()
            self._context.set_input_shape(spec.name, tuple(tensor.shape))
            self._context.set_tensor_address(spec.name, tensor.data_ptr())
            keep.append(tensor)
        outputs = {}
        for name in self.output_names():
            shape = tuple(self._context.get_tensor_shape(name))
            dtype = np.dtype(self._trt.nptype(self._engine.get_tensor_dtype(name)))
            torch_dtype = torch.from_numpy(np.zeros(0, dtype)).dtype
            tensor = torch.empty(shape, dtype=torch_dtype, device="cuda")
            self._context.set_tensor_address(name, tensor.data_ptr())
            outputs[name] = tensor
        stream = torch.cuda.current_stream()
        if not self._context.execute_async_v3(stream.cuda_stream):
            raise BadInput(f"TensorRT could not run '{self.engine_path.name}' on these inputs")
        stream.synchronize()
        return {name: t.cpu().numpy() for name, t in outputs.items()}
