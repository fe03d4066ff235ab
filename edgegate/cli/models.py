"""`edgegate models` and `edgegate targets`: what this install knows (the model zoo, the
block families it recognises, the deployment targets and whether this machine has each)."""

# No `from __future__ import annotations`: Typer reads the parameters' Annotated types.
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from edgegate.cli.console import emit_json, out
from edgegate.cli.options import Choices, JsonOpt


def models(
    json_out: JsonOpt = False,
    recognised: Annotated[
        bool,
        typer.Option(
            "--recognised",
            help="List the block families edgegate recognises in any model instead.",
        ),
    ] = False,
) -> None:
    """List the model zoo with parameter counts and MACs at each model's default input.

    Commands also take `timm:NAME` and `torchvision:NAME` image classifiers (the `[vision]`
    extra), `hf:FOLDER_OR_ID` causal LMs (the `[hf]` extra), a `module:factory` (with
    --trust-code), a `.pt2` or a checkpoint. `--recognised` lists the blocks edgegate finds
    in any of them (gated recurrences become edgegate ops; gates get fixed-range INT8).

    Examples: `edgegate models --json`; `edgegate models --recognised`
    """
    if recognised:
        _print_recognised(json_out)
        return
    from edgegate.pipeline.zoo import model_table

    rows = model_table()
    if json_out:
        emit_json(rows)
        return
    table = Table(
        title="edgegate model zoo",
        caption=escape(
            "MACs at the default input; --json for more. MODEL may also be timm:NAME or "
            "torchvision:NAME ([vision] extra), hf:FOLDER_OR_ID ([hf] extra), "
            "module:factory, a .pt2 or a .pt; --recognised lists the blocks found in them"
        ),
    )
    for col in ("model", "task", "params", "MACs", "input"):
        table.add_column(col, no_wrap=True)
    table.add_column("shipped weights")
    for r in rows:
        table.add_row(
            r["name"],
            r["task"],
            f"{r['params'] / 1e3:.0f}k",
            f"{r['macs'] / 1e6:.1f}M",
            "x".join(map(str, r["default_input"])),
            "\n".join(s.partition(":")[2] or "default" for s in r["shipped_weights"]) or "-",
        )
    out.print(table)
    for r in rows:
        if r["train_command"] and not r["shipped_weights"]:
            out.print(
                f"{r['name']} ships no weights (random init until trained): {r['train_command']}",
                highlight=False,
                soft_wrap=True,
            )


def _print_recognised(json_out: bool) -> None:
    from edgegate.recognise.families import recognised_families

    rows = recognised_families()
    if json_out:
        emit_json(rows)
        return
    table = Table(title="blocks edgegate recognises in any model", caption="--json for details")
    table.add_column("family", no_wrap=True)
    for col in ("becomes", "keyed by", "library models"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["family"], r["becomes"], r["keyed_by"], ", ".join(r["models"]) or "-")
    out.print(table)


def targets(json_out: JsonOpt = False) -> None:
    """List the deployment targets, what each needs, and whether this machine has it.

    Example: `edgegate targets --json`
    """
    from edgegate.targets import all_targets

    rows = [
        {
            "name": t.name,
            "summary": t.summary,
            "default_profile": t.default_profile,
            "available": not t.missing(),
            "missing": t.missing(),
            "install": t.install_hint,
        }
        for t in all_targets().values()
    ]
    if json_out:
        emit_json(rows)
        return
    table = Table(title="edgegate targets")
    for col in ("target", "what it writes", "here"):
        table.add_column(col)
    for r in rows:
        here = "ready" if r["available"] else f"missing {', '.join(r['missing'])}: {r['install']}"
        table.add_row(r["name"], escape(r["summary"]), escape(here))
    out.print(table)


def register(app: typer.Typer, choices: Choices) -> None:
    app.command()(models)
    app.command()(targets)
