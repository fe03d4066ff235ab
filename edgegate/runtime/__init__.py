"""Runtimes behind one Runner interface: torch, onnxruntime, ExecuTorch, two-stage GC, TensorRT,
Core ML."""

from edgegate.runtime.base import Runner, TensorSpec
from edgegate.runtime.coreml_runner import CoreMLRunner
from edgegate.runtime.executorch_runner import ExecuTorchRunner
from edgegate.runtime.onnxruntime_runner import OnnxRuntimeRunner
from edgegate.runtime.tensorrt_runner import TensorRTRunner
from edgegate.runtime.torch_runner import TorchRunner
from edgegate.runtime.two_stage import TwoStageRunner

__all__ = [
    "CoreMLRunner",
    "ExecuTorchRunner",
    "OnnxRuntimeRunner",
    "Runner",
    "TensorRTRunner",
    "TensorSpec",
    "TorchRunner",
    "TwoStageRunner",
]
