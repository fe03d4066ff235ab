"""What every command prints with: the two consoles, JSON, tables, warnings and progress.

Results go to stdout (tables, or JSON with --json); warnings, progress and errors go to
stderr, so `--json` output stays parseable.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgegate.cli.progress import ConsoleProgress

out = Console(emoji=False)  # a spec like `timm:x:num_classes=10` is not an emoji code
err = Console(stderr=True, emoji=False)
invocation: list[str] = []  # the arguments main() was given, recorded in checkpoints


def emit_json(payload: Any) -> None:
    out.print_json(json.dumps(payload))


def command_line() -> str:
    """The command as the user typed it (without --debug), for the records a command writes."""
    return " ".join(["edgegate", *invocation])


def error_line(label: str, message: str) -> None:
    """One red-labelled line on stderr; the message is escaped, as it may hold brackets (an
    install hint's extra, a shape) that rich would otherwise read as markup and drop."""
    err.print(f"[bold red]{label}:[/] {escape(message)}", highlight=False, soft_wrap=True)


def warn(result: dict[str, Any]) -> None:
    for line in result.get("warnings", []):
        err.print(f"[bold yellow]warning:[/] {escape(line)}", highlight=False, soft_wrap=True)


def print_rows(rows: list[tuple[str, str]], title: str | None = None) -> None:
    table = Table(title=title, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, value)
    out.print(table)


def print_metrics(metrics: dict[str, Any]) -> None:
    table = Table(show_header=False, box=None)
    for key, value in metrics.items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    out.print(table)


def print_result(
    result: dict[str, Any], json_out: bool, rows: Callable[[dict[str, Any]], list[tuple[str, str]]]
) -> None:
    """A pipeline result: its warnings, then JSON or the table of ``rows(result)``."""
    warn(result)
    if json_out:
        emit_json(result)
    else:
        print_rows(rows(result))


@contextmanager
def progress_display() -> Iterator[ConsoleProgress]:
    progress = ConsoleProgress(err)
    try:
        yield progress
    finally:
        progress.close()


def fail(result: dict[str, Any], what: str) -> None:
    """Exit 1 with one line naming what broke."""
    reasons = "; ".join(result.get("failures", [])) or "a tolerance was broken"
    error_line(f"{what} failed", reasons)
    raise typer.Exit(1)
