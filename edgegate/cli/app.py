"""The `edgegate` command line: thin wrappers that parse, call the pipeline and print.

The app is built per invocation (``build_app``), so its ``--target`` and ``--profile`` choices
are always the registries' current contents. Each command (or group) is a module of this
package with a ``register(app, choices)``; this one builds the app and runs it (``main``):
errors derived from EdgegateError become one line on stderr and their exit code (design.md
§7), anything else is an internal error (exit 70), Ctrl-C exits 130; `--debug` shows the
traceback instead.
"""

# No `from __future__ import annotations`: Typer reads _root's Annotated types.
import sys
from typing import Annotated

import typer

from edgegate import __version__
from edgegate.cli import bench, bundle, deploy, export, models, quantize, train, validate
from edgegate.cli.console import error_line, invocation, out
from edgegate.cli.options import Choice, Choices
from edgegate.errors import (
    EXIT_BAD_INPUT,
    EXIT_INTERNAL_ERROR,
    EXIT_INTERRUPTED,
    EdgegateError,
)

HELP = (
    "Deploy gated neural networks (SE gates, gated compression, gated attention, "
    "gated linear recurrences) to edge runtimes.\n\n"
    "Exit codes: 0 ok, 1 validation failed, 2 bad input, 3 backend unavailable or toolchain "
    "failed, 70 internal error, 130 interrupted. Add --debug anywhere to see tracebacks."
)
# In the order `edgegate --help` lists them.
COMMAND_MODULES = (models, train, export, quantize, validate, bundle, bench, deploy)


def build_app() -> typer.Typer:
    """The Typer app, its choices read from the target and profile registries."""
    from edgegate.quant.profiles import check_profile_name, profile_names
    from edgegate.targets import check_target_name, target_names

    app = typer.Typer(
        name="edgegate",
        help=HELP,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode="markdown",
    )
    app.callback()(_root)
    choices = Choices.of(
        Choice(target_names(), check_target_name), Choice(profile_names(), check_profile_name)
    )
    for module in COMMAND_MODULES:
        module.register(app, choices)
    return app


def _version(value: bool) -> None:
    if value:
        out.print(f"edgegate {__version__}")
        raise typer.Exit()


def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks on errors (also after a command).")
    ] = False,
) -> None:
    """Global options; `--debug` is read by main() wherever it appears."""


def _usage_line(exc: typer.TyperException) -> str:
    command = getattr(getattr(exc, "ctx", None), "command_path", "edgegate")
    return f"{exc.format_message().strip()} (see `{command} --help`)"


def _interrupted() -> int:
    error_line("interrupted", "stopped by Ctrl-C")
    return EXIT_INTERRUPTED


def main(argv: list[str] | None = None) -> int:
    """Console-script entry: map EdgegateError to its exit code and one line.

    Usage errors (unknown option, bad choice) are one line too, with exit code 2; no
    arguments at all prints the help and exits 2.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    invocation[:] = args
    try:
        app = build_app()
        if not args:  # what no_args_is_help does, without catching typer's private error
            app(args=["--help"], prog_name="edgegate", standalone_mode=False)
            return EXIT_BAD_INPUT
        code = app(args=args, prog_name="edgegate", standalone_mode=False)
    except KeyboardInterrupt:
        if debug:
            raise
        return _interrupted()
    except typer.TyperException as exc:  # typer's usage errors (its click's ClickException)
        if debug:
            raise
        error_line("error", _usage_line(exc))
        return exc.exit_code
    except EdgegateError as exc:
        if debug:
            raise
        if exc.exit_code == EXIT_INTERNAL_ERROR:
            error_line("internal error", f"{exc} (rerun with --debug)")
        else:
            error_line("error", str(exc))
        return exc.exit_code
    except Exception as exc:  # a bug in edgegate: still one line unless --debug
        if debug:
            raise
        error_line("internal error", f"{type(exc).__name__}: {exc} (rerun with --debug)")
        return EXIT_INTERNAL_ERROR
    if code == EXIT_INTERRUPTED:  # typer turns a Ctrl-C inside a command into Exit(130)
        return _interrupted()
    return code if isinstance(code, int) else 0


def console_main() -> None:
    sys.exit(main())
