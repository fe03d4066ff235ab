"""Runners whose libraries cannot be installed here say so with exit code 3, not ImportError."""

from __future__ import annotations

from edgegate.errors import BackendUnavailable


class CoreMLRunner:
    def __init__(self, *args: object, **kwargs: object) -> None:
        raise BackendUnavailable("Core ML prediction needs macOS with coremltools installed")
