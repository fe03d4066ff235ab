"""Runtimes behind one Runner interface: torch, onnxruntime, two-stage GC, TensorRT, Core ML.

Importing this package needs neither torch's nor any backend's import to succeed up
front: each runner imports its library when it is used.
"""

from edgegate.runtime.base import Runner, TensorSpec
from edgegate.runtime.factory import runner_for
from edgegate.runtime.feed import check_feed
from edgegate.runtime.onnxruntime_runner import OnnxRuntimeRunner
from edgegate.runtime.torch_runner import TorchRunner
from edgegate.runtime.two_stage import TwoStageRunner
from edgegate.runtime.unavailable import CoreMLRunner, TensorRTRunner

__all__ = [
    "CoreMLRunner",
    "OnnxRuntimeRunner",
    "Runner",
    "TensorRTRunner",
    "TensorSpec",
    "TorchRunner",
    "TwoStageRunner",
    "check_feed",
    "runner_for",
]
