"""ONNX Runtime as a Runner, with the feed checked so a bad input is one clear line."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from edgegate.errors import BackendUnavailable, BadInput, first_line
from edgegate.runtime.base import Runner, TensorSpec

_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(bool)": "bool",
}


def ort_message(exc: BaseException) -> str:
    """ORT's error without its boilerplate: the node and what went wrong there."""
    text = first_line(exc, repr(exc))
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    text = re.sub(r"^Non-zero status code returned while running ", "", text)
    text = re.sub(r"/onnxruntime_src/\S+ ", "", text)
    return re.sub(r"(?:virtual \S+ )?\w+(?:::\w+)+\([^()]*\) ", "", text)


def _import_ort():
    try:
        import onnxruntime
    except ImportError:
        raise BackendUnavailable("onnxruntime is not installed: pip install onnxruntime") from None
    return onnxruntime


class OnnxRuntimeRunner(Runner):
    name = "onnxruntime"

    def __init__(
        self,
        path: str | os.PathLike[str],
        threads: int | None = None,
        providers: tuple[str, ...] = ("CPUExecutionProvider",),
        fuse_qdq: bool = True,
        model_bytes: bytes | None = None,
    ) -> None:
        """``fuse_qdq=False`` runs Q/DQ graphs as written (float emulation) instead of letting
        ORT fuse them into its own integer kernels: the way to check a graph meant for another
        runtime (TensorRT), whose rounding ORT's fused kernels do not reproduce.
        ``model_bytes`` runs a model prepared in memory (``path`` still names it in messages)."""
        super().__init__()
        self.model_bytes = model_bytes
        self.fuse_qdq = fuse_qdq
        self.path = Path(path)
        self.threads = threads
        self.providers = providers
        self._session = None
        self._specs: list[TensorSpec] | None = None
        self._outputs: list[str] | None = None
        self._accepted: tuple | None = None

    def activate(self) -> None:
        ort = _import_ort()
        if self.model_bytes is None and not self.path.is_file():
            raise BadInput(f"'{self.path}' does not exist")
        options = ort.SessionOptions()
        if self.threads is not None:
            options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 4  # its errors come back as exceptions, said once
        if self.idle_between_runs:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if not self.fuse_qdq:
            options.add_session_config_entry("session.disable_quant_qdq", "1")
        try:
            model = self.model_bytes if self.model_bytes is not None else os.fspath(self.path)
            self._session = ort.InferenceSession(model, options, providers=list(self.providers))
        except Exception as exc:  # ORT raises its own untyped errors for bad files
            first = first_line(exc)
            raise BadInput(f"'{self.path}' is not a loadable ONNX model: {first}") from None

    def deactivate(self) -> None:
        self._session = None
        self._specs = self._outputs = None

    @property
    def session(self):
        if self._session is None:
            self.activate()
        return self._session

    def input_specs(self) -> list[TensorSpec]:
        if self._specs is None:  # cached: asking ORT costs more than a tiny model's run
            self._specs = [
                TensorSpec(i.name, tuple(i.shape), _ORT_TYPES.get(i.type, i.type))
                for i in self.session.get_inputs()
            ]
        return self._specs

    def output_names(self) -> list[str]:
        if self._outputs is None:
            self._outputs = [o.name for o in self.session.get_outputs()]
        return self._outputs

    def check_feed(self, feed: dict[str, np.ndarray]) -> None:
        """Name, rank, fixed dims and dtype of every input, before ORT sees them.

        The last accepted signature is remembered: a streaming caller pays for the check
        once, not on every sample.
        """
        signature = tuple((k, np.shape(v), getattr(v, "dtype", None)) for k, v in feed.items())
        if signature == self._accepted:
            return
        self._check_feed(feed)
        self._accepted = signature

    def _check_feed(self, feed: dict[str, np.ndarray]) -> None:
        specs = {s.name: s for s in self.input_specs()}
        missing = [n for n in specs if n not in feed]
        if missing:
            raise BadInput(f"'{self.path.name}' needs input(s) {missing}, got {sorted(feed)}")
        extra = [n for n in feed if n not in specs]
        if extra:
            raise BadInput(f"'{self.path.name}' has no input(s) {extra} (inputs: {sorted(specs)})")
        for name, spec in specs.items():
            array = np.asarray(feed[name])
            shape = tuple(array.shape)
            if len(shape) != len(spec.shape) or any(
                isinstance(d, int) and d != s for d, s in zip(spec.shape, shape, strict=False)
            ):
                raise BadInput(
                    f"input '{name}' of '{self.path.name}' expects shape {list(spec.shape)}, "
                    f"got {list(shape)}"
                )
            if array.dtype.name != spec.dtype:
                raise BadInput(
                    f"input '{name}' of '{self.path.name}' expects {spec.dtype}, "
                    f"got {array.dtype.name}"
                )

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.check_feed(feed)
        names = self.output_names()
        try:
            outputs = self.session.run(names, feed)
        except Exception as exc:  # e.g. a dynamic dim the graph cannot actually take
            raise BadInput(f"'{self.path.name}' rejected the inputs: {ort_message(exc)}") from None
        return dict(zip(names, outputs, strict=True))
