"""Swap every recognised recurrence of a model for its edgegate form, checked block by block.

Each candidate block is run once inside the model (forward hooks keep its real inputs), then
its edgegate form is run on the same inputs: a form that disagrees, or fails, is not swapped
and the block is reported as traced with the reason. So a transformers release that changes a
block's arithmetic costs speed, never correctness.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

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
        why = _disagreement(recogniser.swap(module), seen.get(id(module)))
        if why is not None:
            report.traced.append(Traced(path, type(module).__name__, why))
            continue
        _replace(model, path, recogniser.swap(module))
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
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
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


def _unrecognised(model: nn.Module, report: RecurrenceReport) -> list[Traced]:
    """Outermost recurrence-like blocks with no edgegate form inside or around them."""
    taken = [s.path for s in report.swapped] + [t.path for t in report.traced]
    out: list[Traced] = []
    for path, module in model.named_modules():
        cls = type(module)
        if isinstance(module, EdgegateForm) or cls.__module__.startswith("edgegate."):
            continue
        if not RECURRENT_CLASS.search(cls.__name__) or NOT_RECURRENT_CLASS.search(cls.__name__):
            continue
        related = [p for p in taken if _within(p, path) or _within(path, p)]
        if related:
            continue
        out.append(
            Traced(
                path, cls.__name__, f"no recogniser for {qualified(cls)}: exported as traced code"
            )
        )
        taken.append(path)
    return out


def _within(inner: str, outer: str) -> bool:
    return inner == outer or outer == "" or inner.startswith(f"{outer}.")
