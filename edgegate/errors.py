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


def raised_in_edgegate(exc: BaseException) -> bool:
    """Whether ``exc`` was raised by edgegate's code rather than the model it was handed.

    Walks ``exc``'s traceback below the frame that caught it and takes the innermost frame
    that is neither the toolchain's nor Python's own: where that frame runs edgegate's code
    (its ops, zoo models, tracers, translations), the failure is edgegate's. A traceback that
    never leaves the toolchain proves nothing, and the answer is False (the caller keeps
    its old verdict)."""
    tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
    innermost = ""
    while tb is not None:
        module = str(tb.tb_frame.f_globals.get("__name__", ""))
        top = module.partition(".")[0]
        if top not in TOOLCHAIN_PACKAGES and top not in sys.stdlib_module_names:
            innermost = module
        tb = tb.tb_next
    return innermost == "edgegate" or innermost.startswith("edgegate.")
