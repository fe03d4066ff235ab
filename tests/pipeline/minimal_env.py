"""A fresh virtual environment holding only what one import needs, for device-side scripts.

The packages are linked from this environment's site-packages (the machine has no network
guarantee), so the venv holds exactly the import closure of ``imports``: a script run there
cannot reach torch or edgegate unless that closure does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

_CLOSURE = """
import importlib.util, json, sys
before = set(sys.modules)
{imports}
names = {{m.split('.')[0] for m in set(sys.modules) - before}} - set(sys.stdlib_module_names)
paths = []
for name in sorted(names):
    try:
        spec = importlib.util.find_spec(name)
    except ValueError:  # a module made at run time (Cython's), with no file behind it
        continue
    if spec is None:
        continue
    if spec.submodule_search_locations:
        paths += list(spec.submodule_search_locations)
    elif spec.origin and spec.origin not in ("built-in", "frozen"):
        paths.append(spec.origin)
print(json.dumps(sorted(set(paths))))
"""


def import_closure(imports: str) -> list[Path]:
    """The files and package folders that ``imports`` loads (outside the standard library)."""
    code = _CLOSURE.format(imports=imports)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [Path(p) for p in json.loads(done.stdout.strip().splitlines()[-1])]


def clean_environ() -> dict[str, str]:
    """This process's environment without the variables that would lend a device Python this
    one's packages."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def run_isolated(python: Path, *args, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    """Run ``python`` with ``args`` from ``cwd`` (never the repository, whose edgegate/ would
    be importable from the working folder)."""
    return subprocess.run(
        [python, *args], capture_output=True, text=True, cwd=cwd, env=clean_environ(), **kwargs
    )


def make_env(folder: Path, imports: str) -> Path:
    """A venv at ``folder`` whose site-packages links only the closure of ``imports`` (plus
    the wheels' bundled-library folders such as ``numpy.libs``); returns its python."""
    venv.EnvBuilder(with_pip=False, symlinks=True).create(folder)
    python = folder / "bin" / "python"
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    )  # fmt: skip
    for path in import_closure(imports):
        if path.parent.name != "site-packages":  # a namespace package's inner folder
            continue
        (site / path.name).symlink_to(path)
        stem = path.name.removesuffix(".py")
        for extra in [path.parent / f"{stem}.libs", *path.parent.glob(f"{stem}-*.dist-info")]:
            if extra.is_dir() and not (site / extra.name).exists():
                (site / extra.name).symlink_to(extra)  # bundled libraries; the version record
    return python
