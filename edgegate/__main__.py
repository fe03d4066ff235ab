"""`python -m edgegate` runs the CLI."""

from edgegate.cli import console_main

console_main()
