"""The one-way data flow and the absence of import cycles, as import-linter contracts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_hold():
    """cli -> pipeline -> targets -> validate -> runtime -> exporters -> quant -> train ->
    models | data -> ops; shared foundations import no stage; no cycle among siblings."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "lint_imports.py")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "broken" not in proc.stdout.lower() or "0 broken" in proc.stdout.lower(), proc.stdout
