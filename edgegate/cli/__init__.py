"""The `edgegate` command line (``edgegate.cli.app``) and its progress display."""

from edgegate.cli.app import build_app, console_main, main

__all__ = ["build_app", "console_main", "main"]
