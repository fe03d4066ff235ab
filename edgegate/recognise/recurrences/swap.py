"""Swap every recognised recurrence of a model for its edgegate form, checked block by block.

Each candidate block is run once inside the model (forward hooks keep its real inputs), then
its edgegate form is run on the same inputs: a form that disagrees, or fails, is not swapped
and the block is reported as traced with the reason. So a transformers release that changes a
block's arithmetic costs speed, never correctness.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from edgegate.errors import first_line
from edgegate.recognise.recurrences.base import (
    EdgegateForm,
    RecurrenceRecogniser,
    Swapped,
    Traced,
    qualified,
)

# Block classes that promise a recurrence: left unswapped, they are reported as traced code.
RECURRENT_CLASS = re.compile(
    r"(?i:delta.?net|mamba|lru|rnn|gru|lstm|ssm|recurren|linear.?att|rwkv|retention|hgrn|gla(?![a-z]))"
)
# Parts of such models that are not recurrences although their names say the family's
# (Mamba2RMSNorm, MambaEmbeddings, RecurrentGemmaMlp, the decoder layers and whole models).
NOT_RECURRENT_CLASS = re.compile(
    r"(?i:norm|embed|rotary|mlp|moe|expert|router|cache|config|model$|layer$|decoder|forcausal|forsequence|forconditional)"
)
RTOL = 1e-3  # of the block output's own scale: fp32 chunk forms agree to about 1e-6


@dataclass
class RecurrenceReport:
    swapped: list[Swapped] = field(default_factory=list)
    traced: list[Traced] = field(default_factory=list)

    def to_dict(self) -> dict[str, list[dict[str, str]]]:
        return {
            "swapped": [s.to_dict() for s in self.swapped],
            "traced": [t.to_dict() for t in self.traced],
        }


def swap_recurrences(
    model: nn.Module,
    example: tuple[torch.Tensor, ...] | None,
    recognisers: list[RecurrenceRecogniser],
) -> RecurrenceReport:
    """Swap in place; ``example`` feeds the model once to check each form on real inputs."""
    report = RecurrenceReport()
    candidates = _candidates(model, recognisers)
    seen = _block_io(model, example, [module for _, module, _ in candidates])
    for path, module, recogniser in candidates:
        form = recogniser.swap(module)
        why = _disagreement(form, seen.get(id(module)))
        if why is not None:
            report.traced.append(Traced(path, type(module).__name__, why))
            continue
        _replace(model, path, form)
        report.swapped.append(
            Swapped(path, recogniser.family, recogniser.op, recogniser.matched_by(module))
        )
    report.traced.extend(_unrecognised(model, report))
    return report


def _candidates(
    model: nn.Module, recognisers: list[RecurrenceRecogniser]
) -> list[tuple[str, nn.Module, RecurrenceRecogniser]]:
    found: list[tuple[str, nn.Module, RecurrenceRecogniser]] = []
    for path, module in model.named_modules():
        if any(path.startswith(f"{p}.") for p, _, _ in found):
            continue
        for recogniser in recognisers:
            if recogniser.matches(module):
                found.append((path, module, recogniser))
                break
    return found


def _block_io(
    model: nn.Module, example: tuple[torch.Tensor, ...] | None, blocks: list[nn.Module]
) -> dict[int, tuple[tuple, dict, Any]]:
    """Each block's first call inside one forward pass of ``model``: (args, kwargs, output)."""
    if example is None or not blocks:
        return {}
    seen: dict[int, tuple[tuple, dict, Any]] = {}

    def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        seen.setdefault(id(module), (args, dict(kwargs), output))

    handles = [b.register_forward_hook(hook, with_kwargs=True) for b in blocks]
    try:
        with torch.no_grad():
            model(*example)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in _tensors(item)]
    return []


def _disagreement(form: EdgegateForm, io: tuple[tuple, dict, Any] | None) -> str | None:
    """None when the form reproduces the block's recorded call; else why not, in a phrase."""
    if io is None:
        return None  # no example to check on, or the block did not run: trust the key
    args, kwargs, expected = io
    try:
        with torch.no_grad():
            got = form(*args, **kwargs)
    except Exception as err:  # the library changed the call: keep its own code
        first = first_line(err, "")
        return f"edgegate's form failed on the block's inputs ({type(err).__name__}: {first})"
    ours, theirs = _tensors(got), _tensors(expected)
    if len(ours) != len(theirs) or any(
        a.shape != b.shape for a, b in zip(ours, theirs, strict=False)
    ):
        return "edgegate's form returns other outputs than the block"
    for a, b in zip(ours, theirs, strict=True):
        scale = float(b.detach().abs().max()) if b.numel() else 0.0
        err = float((a.detach().float() - b.detach().float()).abs().max()) if b.numel() else 0.0
        if not err <= RTOL * scale + 1e-6:
            return (
                f"edgegate's form differs from the block (max abs {err:.3g} at scale {scale:.3g})"
            )
    return None


def _replace(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, name, new)


def _own_name(cls: type) -> str:
    """A class's name less its model's prefix: transformers names every class of a model file
    after the model (``RecurrentGemmaRMSNorm`` is a norm, ``MambaMixer`` a mixer)."""
    module = sys.modules.get(cls.__module__)
    for name in vars(module) if module is not None else ():
        prefix = name.removesuffix("PreTrainedModel")
        if prefix and prefix != name and cls.__name__.startswith(prefix):
            return cls.__name__[len(prefix) :]
    return cls.__name__


def _unrecognised(model: nn.Module, report: RecurrenceReport) -> list[Traced]:
    """Outermost recurrence-like blocks with no edgegate form inside or around them.

    Judged by a class's own name first. Only where neither that nor a recogniser found any
    does the model's name count (Mamba's classes are MambaMixer, MambaBlock, ...): then the
    outermost class so named is reported. Once a block of RecurrentGemma is recognised, its
    RecurrentGemmaRMSNorm and RecurrentGemmaMlp are not recurrences.
    """
    taken = [s.path for s in report.swapped] + [t.path for t in report.traced]
    out = _outermost_named(model, taken, _own_name)
    if not taken:
        out = _outermost_named(model, taken, lambda cls: cls.__name__)
    return out


def _outermost_named(
    model: nn.Module, taken: list[str], name: Callable[[type], str]
) -> list[Traced]:
    """Outermost modules whose ``name`` looks recurrent and that hold, and sit in, nothing
    in ``taken``; each one found is added to ``taken``."""
    out: list[Traced] = []
    for path, module in model.named_modules():
        cls = type(module)
        if isinstance(module, EdgegateForm) or cls.__module__.startswith("edgegate."):
            continue
        if not RECURRENT_CLASS.search(name(cls)) or NOT_RECURRENT_CLASS.search(name(cls)):
            continue
        if any(_within(p, path) or _within(path, p) for p in taken):
            continue
        reason = f"no recogniser for {qualified(cls)}: exported as traced code"
        out.append(Traced(path, cls.__name__, reason))
        taken.append(path)
    return out


def _within(inner: str, outer: str) -> bool:
    return inner == outer or outer == "" or inner.startswith(f"{outer}.")
