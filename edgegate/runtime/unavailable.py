"""TensorRT and Core ML runners: placeholders that fail with exit code 3, never ImportError.

Importing this module needs neither library; constructing a runner says what is missing
and how to get it. Both stay placeholders until their backends land; until then they
still fail as BackendUnavailable, so a CI job reads "backend unavailable", not a crash.
"""

from __future__ import annotations

import importlib.util
import sys

import numpy as np

from edgegate.errors import BackendUnavailable
from edgegate.runtime.base import Runner, TensorSpec


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def tensorrt_unavailable_reason() -> str:
    if not _installed("tensorrt"):
        return (
            "TensorRT is not installed: pip install tensorrt (needs an NVIDIA GPU; "
            "on Jetson it ships with JetPack)"
        )
    return "TensorRT is installed, but edgegate's TensorRT runner is not in this release"


def coreml_unavailable_reason() -> str:
    if not _installed("coremltools"):
        return "Core ML is not installed: pip install coremltools (prediction needs macOS)"
    if sys.platform != "darwin":
        return f"Core ML prediction needs macOS; this is {sys.platform}"
    return "coremltools is installed, but edgegate's Core ML runner is not in this release"


class _Unavailable(Runner):
    """Refuses construction; the abstract methods exist only to keep the interface whole."""

    def input_specs(self) -> list[TensorSpec]:  # pragma: no cover - never constructed
        raise BackendUnavailable(self.name)

    def output_names(self) -> list[str]:  # pragma: no cover
        raise BackendUnavailable(self.name)

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:  # pragma: no cover
        raise BackendUnavailable(self.name)


class TensorRTRunner(_Unavailable):
    name = "tensorrt"

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise BackendUnavailable(tensorrt_unavailable_reason())


class CoreMLRunner(_Unavailable):
    name = "coreml"

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise BackendUnavailable(coreml_unavailable_reason())
