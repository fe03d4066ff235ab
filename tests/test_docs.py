"""What the docs tell a newcomer to run: the commands exist, nothing installs another project."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "deploy_examples").rglob("*.*"))]


def test_no_doc_installs_the_unrelated_pypi_edgegate():
    bare = re.compile(r"pip install\s+(-\S+\s+)*edgegate(\s|$|[<>=\[])")
    offenders = [str(p) for p in DOCS if p.is_file() and bare.search(p.read_text())]
    assert not offenders, offenders


def test_readme_opens_with_the_two_setup_commands():
    block = ROOT.joinpath("README.md").read_text().split("```")[1]
    commands = [line.split("#")[0].strip() for line in block.splitlines()[1:] if line.strip()]
    assert commands == ["make demo", "make test"]


def _commands_in_code(text: str) -> set[str]:
    """`edgegate X` inside code: fenced blocks, inline code, and workflow `run:` lines."""
    fenced = text.split("```")
    code = "\n".join(fenced[1::2])
    code += "\n" + "\n".join("\n".join(part.split("`")[1::2]) for part in fenced[::2])
    code += "\n" + "\n".join(re.findall(r"run: (.+)", text))
    return set(re.findall(r"(?:^|\s|/)edgegate (\w[\w-]*)", code, flags=re.MULTILINE))


def test_every_command_the_docs_show_exists():
    from edgegate.cli import build_app

    known = {
        (c.name or c.callback.__name__).replace("_", "-") for c in build_app().registered_commands
    }
    shown = set()
    for path in DOCS:
        if path.is_file():
            shown |= _commands_in_code(path.read_text())
    assert {"export", "validate", "quantize", "deploy"} <= shown  # the check sees the docs
    assert shown <= known, sorted(shown - known)
