"""What a recogniser is and what it reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import fx


@dataclass(frozen=True)
class Found:
    """One recognised gate: ``node`` computes its [0, 1] output."""

    path: str  # module path of the block ('' for the root)
    family: str  # the recogniser that claimed it
    kind: str  # 'sigmoid', 'hardsigmoid', 'softmax', 'clipped_softmax'
    matched_by: str  # 'class torchvision.ops.misc.SqueezeExcitation', 'pattern ...'
    node: fx.Node = field(compare=False, repr=False)

    def to_dict(self) -> dict[str, str]:
        return {
            "path": self.path,
            "family": self.family,
            "kind": self.kind,
            "matched_by": self.matched_by,
        }


@dataclass(frozen=True)
class Leftover:
    """A gate-like op or block that no recogniser claimed; ``warn`` is False where leaving it
    alone is the design (a scan's input gates stay float, a constant gate is a weight)."""

    path: str
    what: str
    reason: str
    warn: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "what": self.what, "reason": self.reason}

    def line(self) -> str:
        return f"{self.path or '<root>'} ({self.what}): {self.reason}"


@dataclass
class Recognition:
    found: list[Found]
    leftovers: list[Leftover]

    @property
    def warned(self) -> list[Leftover]:
        return [item for item in self.leftovers if item.warn]

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for item in self.found:
            counts[item.family] = counts.get(item.family, 0) + 1
        return counts


class Recogniser:
    """A block family. ``find`` claims gate nodes among ``candidates`` (every gate activation
    of the graph nobody has claimed yet) and returns what it recognised."""

    family: ClassVar[str]
    becomes: ClassVar[str]  # what the block turns into, for `edgegate` docs and --help
    module_classes: ClassVar[tuple[str, ...]] = ()  # qualified class names it is keyed by

    def find(self, graph_module: fx.GraphModule, candidates: dict[fx.Node, str]) -> list[Found]:
        raise NotImplementedError
