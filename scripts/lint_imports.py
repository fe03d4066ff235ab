"""Check the import contracts in pyproject.toml against the installed package layout.

exporters/ and quant/ install as ``edgegate.exporters`` and ``edgegate.quant`` (setup.py's
package mapping), which import-linter's graph builder cannot follow in a source checkout. This
script copies the sources into that layout in a temporary folder and runs ``lint-imports``
there. Exit status: lint-imports' own (0 when every contract holds).

Usage: .venv/bin/python scripts/lint_imports.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAPPED = {"exporters": "exporters", "quant": "quant"}  # top-level folder -> edgegate.<name>
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "weights")


def assemble(into: Path) -> Path:
    """The installed layout of the package under ``into``; returns the package folder."""
    package = into / "edgegate"
    shutil.copytree(ROOT / "edgegate", package, ignore=IGNORE)
    for folder, name in MAPPED.items():
        shutil.copytree(ROOT / folder, package / name, ignore=IGNORE)
    return package


def main() -> int:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    if not lint_imports.exists():
        print("lint-imports is not installed: pip install import-linter", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="edgegate-imports-") as tmp:
        assemble(Path(tmp))
        env = {**os.environ, "PYTHONPATH": tmp}
        command = [str(lint_imports), str(ROOT / "pyproject.toml"), "--no-cache"]
        return subprocess.run(command, env=env, cwd=tmp, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
