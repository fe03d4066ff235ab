"""The CLI stays split: small modules, short functions, one set of INT8 options."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import edgegate.cli

CLI = Path(edgegate.cli.__file__).resolve().parent
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 120
MODULES = sorted(CLI.glob("*.py"))


def test_the_cli_is_more_than_one_module():
    assert len(MODULES) >= 8, [m.name for m in MODULES]


@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.name)
def test_module_and_function_sizes(module):
    text = module.read_text()
    assert len(text.splitlines()) < MAX_MODULE_LINES, module.name
    long = [
        f"{node.name}: {node.end_lineno - first + 1} lines"
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        for first in [min([node.lineno, *(d.lineno for d in node.decorator_list)])]
        if node.end_lineno - first + 1 >= MAX_FUNCTION_LINES
    ]
    assert not long, f"{module.name}: {long}"


def test_the_size_check_can_fail(tmp_path):
    """The walk sees nested functions (the commands registered inside register())."""
    body = "\n".join(f"        x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    tree = ast.parse(f"def register(app):\n    def command():\n{body}\n")
    sizes = {n.name: n.end_lineno - n.lineno + 1 for n in ast.walk(tree) if hasattr(n, "body")
             and isinstance(n, ast.FunctionDef)}  # fmt: skip
    assert sizes["command"] > MAX_FUNCTION_LINES and sizes["register"] > MAX_FUNCTION_LINES


def _command(name: str):
    app = edgegate.cli.build_app()
    return next(c.callback for c in app.registered_commands if c.callback.__name__ == name)


def test_quantize_and_export_int8_share_their_options_with_the_pipeline():
    from edgegate.cli.quantize import INT8_OPTIONS
    from edgegate.pipeline.quantize import quantize

    pipeline = set(inspect.signature(quantize).parameters)
    for command in ("quantize", "export"):
        params = set(inspect.signature(_command(command)).parameters)
        assert set(INT8_OPTIONS) <= params, (command, set(INT8_OPTIONS) - params)
    assert set(INT8_OPTIONS) <= pipeline, set(INT8_OPTIONS) - pipeline


def test_no_private_typer_or_click_module_is_imported():
    for module in MODULES:
        for node in ast.walk(ast.parse(module.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            private = [n for n in names if n.split(".")[0] in ("typer", "click") and "._" in n]
            assert not private, (module.name, private)
