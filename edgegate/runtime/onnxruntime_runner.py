"""ONNX Runtime as a Runner, with the feed checked so a bad input is one clear line."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import numpy as np

from edgegate.errors import BackendUnavailable, BadInput
from edgegate.runtime.base import Runner, TensorSpec
from edgegate.runtime.feed import check_feed

_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int16)": "int16",
    "tensor(int8)": "int8",
    "tensor(uint64)": "uint64",
    "tensor(uint32)": "uint32",
    "tensor(uint16)": "uint16",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


def import_onnxruntime() -> ModuleType:
    """onnxruntime, or exit code 3 with the install command instead of an ImportError."""
    try:
        import onnxruntime
    except ImportError:
        raise BackendUnavailable("onnxruntime is not installed: pip install onnxruntime") from None
    return onnxruntime


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _specs(args: Sequence[object]) -> list[TensorSpec]:
    # Types ORT cannot map to numpy (e.g. bfloat16, sequences) keep ORT's own name, so the
    # dtype check then names it rather than guessing.
    return [
        TensorSpec(a.name, tuple(a.shape), _ORT_TYPES.get(a.type, a.type))  # type: ignore[attr-defined]
        for a in args
    ]


class OnnxRuntimeRunner(Runner):
    """An InferenceSession: ``threads`` intra-op threads (None: ORT's default), one inter-op.

    Graph optimisation is ORT_ENABLE_ALL. Models with model-local functions and
    custom-domain nodes (edgegate's gated-scan ops) load as they are: ORT inlines the
    function bodies.
    """

    name = "onnxruntime"

    def __init__(
        self,
        path: str | os.PathLike[str],
        threads: int | None = None,
        providers: Sequence[str] = ("CPUExecutionProvider",),
    ) -> None:
        super().__init__()
        self.path = Path(path)
        self.threads = threads
        self.providers = tuple(providers)
        self._session = None
        self._inputs: list[TensorSpec] | None = None
        self._outputs: list[TensorSpec] | None = None
        self._accepted: tuple | None = None

    def activate(self) -> None:
        if self._session is not None:
            return
        ort = import_onnxruntime()
        if not self.path.exists():
            raise BadInput(f"'{self.path}' does not exist")
        if not self.path.is_file():
            raise BadInput(f"'{self.path}' is not a file (expected an .onnx model)")
        options = ort.SessionOptions()
        if self.threads is not None:
            options.intra_op_num_threads = int(self.threads)
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: warnings would bury the CLI's output
        try:
            session = ort.InferenceSession(
                os.fspath(self.path), options, providers=list(self.providers)
            )
        except Exception as exc:  # ORT raises its own untyped errors for bad files
            raise BadInput(
                f"'{self.path}' is not a loadable ONNX model: {_first_line(exc)}"
            ) from None
        self._session = session
        # Cached: asking ORT for the signature costs more than a tiny model's run.
        self._inputs = _specs(session.get_inputs())
        self._outputs = _specs(session.get_outputs())

    def deactivate(self) -> None:
        self._session = None
        self._inputs = self._outputs = None
        self._accepted = None

    @property
    def session(self):
        """The InferenceSession, created on first use when the runner was not entered."""
        if self._session is None:
            self.activate()
        return self._session

    def input_specs(self) -> list[TensorSpec]:
        self.session  # noqa: B018 - loads the model and its specs
        assert self._inputs is not None
        return list(self._inputs)

    def output_specs(self) -> list[TensorSpec]:
        self.session  # noqa: B018
        assert self._outputs is not None
        return list(self._outputs)

    def output_names(self) -> list[str]:
        return [s.name for s in self.output_specs()]

    def check_feed(self, feed: dict[str, np.ndarray]) -> None:
        """Name, rank, fixed dims and dtype of every input, before ORT sees them.

        The last accepted signature is remembered: a streaming caller pays for the full
        check once, not on every sample.
        """
        signature = tuple(
            (k, getattr(v, "shape", None), getattr(v, "dtype", None)) for k, v in feed.items()
        )
        if signature == self._accepted:
            return
        self.session  # noqa: B018
        check_feed(feed, self._inputs or [], f"'{self.path.name}'")
        self._accepted = signature

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.check_feed(feed)
        names = self.output_names()
        try:
            outputs = self.session.run(names, feed)
        except Exception as exc:  # e.g. a dynamic dim the graph cannot actually take
            raise BadInput(f"'{self.path.name}' rejected the inputs: {_first_line(exc)}") from None
        return dict(zip(names, outputs, strict=True))
