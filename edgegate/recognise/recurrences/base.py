"""How a recurrence recogniser swaps a library's block for edgegate's operator.

A block is keyed by the function its forward calls, never by a model's name: transformers
defines ``torch_chunk_gated_delta_rule`` once per model file and every model file that copies
it (Qwen3-Next, Qwen3.5, Olmo-Hybrid, ...) is covered by one recogniser. The edgegate form of a
block adopts the block's parameters, buffers and submodules (so state-dict keys and weights
are the block's own) and runs the block's own forward with the recurrence, and nothing else,
replaced by an edgegate op: projections, convolutions, norms and gates stay the library's code.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn


@dataclass(frozen=True)
class Swapped:
    """A block now computed by an edgegate op."""

    path: str
    family: str
    op: str  # the ONNX op type the block's recurrence becomes
    matched_by: str

    def to_dict(self) -> dict[str, str]:
        return {
            "path": self.path,
            "family": self.family,
            "op": self.op,
            "matched_by": self.matched_by,
        }


@dataclass(frozen=True)
class Traced:
    """A recurrence left as the library's traced code, with the reason."""

    path: str
    what: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "what": self.what, "reason": self.reason}

    def line(self) -> str:
        return f"{self.path or '<root>'} ({self.what}): {self.reason}"


def called_names(cls: type) -> set[str]:
    """The global names a class's forward reads (through its decorators)."""
    forward = inspect.unwrap(cls.forward)
    code = getattr(forward, "__code__", None)
    return set(code.co_names) if code is not None else set()


def qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class EdgegateForm(nn.Module):
    """A library block re-run with its recurrence replaced: a subclass of the block's own
    class (its methods, and isinstance checks, still hold) made by ``adopt``.

    ``replacements`` maps names in the block's module globals to edgegate functions; they are
    in place only while the block's forward runs. Subclasses may also override methods the
    block's forward calls on ``self``.
    """

    replacements: ClassVar[dict[str, Callable[..., Any]]] = {}
    library_class: ClassVar[type[nn.Module]]

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with patched_globals(self.library_class, self.replacements):
            return self.library_class.forward(self, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"edgegate form of {qualified(self.library_class)}"


_FORMS: dict[tuple[type, type], type] = {}


def adopt(block: nn.Module, form: type[EdgegateForm]) -> EdgegateForm:
    """``block`` as an instance of ``form`` over its own class, sharing its parameters,
    buffers and submodules (state-dict keys and weights stay the block's)."""
    library = type(block)
    cls = _FORMS.get((form, library))
    if cls is None:
        name = f"{form.__name__}[{library.__name__}]"
        cls = type(name, (form, library), {"library_class": library})
        _FORMS[(form, library)] = cls
    new = cls.__new__(cls)
    registries = {"_parameters", "_buffers", "_modules"}
    for key, value in block.__dict__.items():
        new.__dict__[key] = dict(value) if key in registries else value
    return new


@contextlib.contextmanager
def patched_globals(cls: type, replacements: dict[str, Callable[..., Any]]) -> Iterator[None]:
    """Swap module-global functions of ``cls``'s module for the duration of a call."""
    namespace = vars(sys.modules[cls.__module__])
    saved = {name: namespace[name] for name in replacements if name in namespace}
    namespace.update({name: fn for name, fn in replacements.items() if name in saved})
    try:
        yield
    finally:
        namespace.update(saved)


class RecurrenceRecogniser:
    """One recurrence family: which blocks it takes and the edgegate form it gives them."""

    family: ClassVar[str]
    op: ClassVar[str]  # ONNX op type of the scan it becomes
    keyed_by: ClassVar[str]  # for docs and reports: what a block must call or be
    form: ClassVar[type[EdgegateForm]]
    families: ClassVar[tuple[str, ...]] = ()  # library models known to use it (docs only)

    def matches(self, module: nn.Module) -> bool:
        raise NotImplementedError

    def matched_by(self, module: nn.Module) -> str:
        return f"{qualified(type(module))} calls {self.keyed_by}"

    def swap(self, module: nn.Module) -> EdgegateForm:
        return adopt(module, self.form)

    library: ClassVar[str] = "transformers."

    def library_block(self, module: nn.Module) -> bool:
        """A block of the library's own code (not already an edgegate form)."""
        return not isinstance(module, EdgegateForm) and type(module).__module__.startswith(
            self.library
        )


class CallsFunction(RecurrenceRecogniser):
    """Blocks whose forward calls one of ``functions`` by name in a library module."""

    functions: ClassVar[tuple[str, ...]]

    def matches(self, module: nn.Module) -> bool:
        cls = type(module)
        if not self.library_block(module):
            return False
        namespace = vars(sys.modules[cls.__module__])
        names = called_names(cls)
        return any(name in names and name in namespace for name in self.functions)


class CallsMethod(RecurrenceRecogniser):
    """Blocks of a library module whose class defines (or inherits) one of ``methods`` and
    whose forward reads it by name (``self.<method>(...)``); the form overrides the method."""

    methods: ClassVar[tuple[str, ...]]

    def matches(self, module: nn.Module) -> bool:
        cls = type(module)
        if not self.library_block(module):
            return False
        names = called_names(cls)
        return any(name in names and callable(getattr(cls, name, None)) for name in self.methods)
