"""Error types that the CLI turns into one-line messages and exit codes (design.md §7)."""

from __future__ import annotations

EXIT_OK = 0
EXIT_VALIDATION_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_BACKEND_UNAVAILABLE = 3


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
