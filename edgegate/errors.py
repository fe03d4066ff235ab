"""Error types that the CLI turns into one-line messages and exit codes (design.md §7)."""

from __future__ import annotations

import sys

EXIT_OK = 0
EXIT_VALIDATION_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_BACKEND_UNAVAILABLE = 3  # also a toolchain that failed on what edgegate gave it
EXIT_INTERNAL_ERROR = 70  # sysexits' EX_SOFTWARE: a bug in edgegate, not the user's input
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C

# Packages whose frames say nothing about who is at fault: the toolchain runs the user's
# code and edgegate's alike (see ``raised_in_edgegate``).
TOOLCHAIN_PACKAGES = frozenset(
    {"torch", "torchao", "brevitas", "onnx", "onnxscript", "onnxruntime", "coremltools",
     "executorch", "tensorrt"}
)  # fmt: skip


def first_line(exc: BaseException, fallback: str | None = None) -> str:
    """An exception's message cut to its first line (what a one-line error can quote), or
    ``fallback`` (the exception's type name by default) when the message is empty."""
    text = str(exc).strip()
    if text:
        return text.splitlines()[0].strip()
    return type(exc).__name__ if fallback is None else fallback


class EdgegateError(Exception):
    """Base class: every subclass knows its exit code, so the CLI never guesses."""

    exit_code = EXIT_BAD_INPUT


class BadInput(EdgegateError):
    """A bad file, bad shape, unknown name or missing data: the user can fix it."""

    exit_code = EXIT_BAD_INPUT


class NotYetImplemented(EdgegateError):
    """A command that a later release fills in; exits 2 with a plain message."""

    exit_code = EXIT_BAD_INPUT


class ValidationFailed(EdgegateError):
    """A parity or accuracy tolerance was broken."""

    exit_code = EXIT_VALIDATION_FAILED


class BackendUnavailable(EdgegateError):
    """A runtime library is missing; the message names the install command."""

    exit_code = EXIT_BACKEND_UNAVAILABLE


class ToolchainFailed(EdgegateError):
    """A toolchain (CMake, TensorRT's parser or builder, torch.onnx's translation, ExecuTorch's
    lowering) failed on what edgegate gave it. The message names the tool and gives its own
    message: neither the user's input nor a missing install is to blame."""

    exit_code = EXIT_BACKEND_UNAVAILABLE


class InternalError(EdgegateError):
    """edgegate's own code, or a graph edgegate made, failed: a bug to report (exit 70), never
    blamed on the input. The CLI prints one line; `--debug` shows where."""

    exit_code = EXIT_INTERNAL_ERROR


def raised_in_edgegate(exc: BaseException, within: str = "edgegate") -> bool:
    """Whether ``exc`` was raised by edgegate's code rather than by the model it was handed.

    Reads ``exc``'s traceback below the frame that caught it, and takes the innermost frame
    that is neither the toolchain's nor Python's own. That frame is edgegate's fault when it
    is edgegate's code and either raised itself (no toolchain frame below it) or ran as a
    callback of the toolchain (a toolchain frame above it: an edgegate op, zoo model or
    ONNX translation that torch.export or torch.onnx was tracing). An edgegate frame that only
    handed the input to the toolchain, and a traceback that never leaves the toolchain, prove
    nothing: False, and the caller keeps its verdict about the input. ``within`` narrows
    "edgegate's code" to one package of it."""
    frames = []
    tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
    while tb is not None:
        frames.append(str(tb.tb_frame.f_globals.get("__name__", "")))
        tb = tb.tb_next
    tool = [_is_tool(name) for name in frames]
    ours = [i for i, is_tool in enumerate(tool) if not is_tool]
    if not ours:
        return False
    last = ours[-1]
    if frames[last] != within and not frames[last].startswith(within + "."):
        return False
    return not any(tool[last + 1 :]) or any(tool[:last])


def _is_tool(module: str) -> bool:
    top = module.partition(".")[0]
    return top in TOOLCHAIN_PACKAGES or top in sys.stdlib_module_names
