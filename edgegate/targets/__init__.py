"""The target registry: the one place that knows which deployment targets exist.

Each target is one module exposing ``TARGET`` (a ``edgegate.targets.base.Target``); adding a
target means writing that module and adding its line to ``TARGET_MODULES``. The CLI builds its
``--target`` choices from here, and the pipeline looks targets up here by name.
"""

from __future__ import annotations

import importlib

from edgegate.errors import BadInput
from edgegate.targets.base import ExportedFile, ExportPart, Target

# name -> module; a module loads (with its exporter and runtime) only when its target is used
TARGET_MODULES: dict[str, str] = {
    "onnx": "edgegate.targets.onnx",
    "onnxruntime": "edgegate.targets.onnxruntime",
    "tensorrt": "edgegate.targets.tensorrt",
    "coreml": "edgegate.targets.coreml",
    "executorch": "edgegate.targets.executorch",
}

__all__ = [
    "TARGET_MODULES",
    "ExportPart",
    "ExportedFile",
    "Target",
    "all_targets",
    "check_target_name",
    "for_file",
    "for_profile",
    "get_target",
    "target_names",
]


def _load(name: str) -> Target:
    target = importlib.import_module(TARGET_MODULES[name]).TARGET
    if target.name != name:
        raise RuntimeError(f"{TARGET_MODULES[name]} registers '{target.name}' as '{name}'")
    return target


def target_names() -> list[str]:
    """The registered targets' names, in registry order (nothing is imported)."""
    return list(TARGET_MODULES)


def all_targets() -> dict[str, Target]:
    """Every registered target by name, in registry order."""
    return {name: _load(name) for name in TARGET_MODULES}


def check_target_name(name: str) -> str:
    """``name`` if a target is registered under it; BadInput listing the known ones otherwise.
    Nothing is imported: the CLI checks its ``--target`` choice with this."""
    if name not in TARGET_MODULES:
        raise BadInput(f"unknown target '{name}': expected one of {', '.join(TARGET_MODULES)}")
    return name


def get_target(name: str) -> Target:
    """The target called ``name``; BadInput listing the known ones otherwise."""
    return _load(check_target_name(name))


def for_profile(family: str) -> Target:
    """The target whose runtime an INT8 profile family is for; the portable target when no
    registered target takes that family (its Q/DQ file is then checked as written)."""
    targets = all_targets().values()
    for target in targets:
        if family in target.profile_families:
            return target
    return next(t for t in targets if t.portable)


def for_file(path: str) -> Target:
    """The target that reads a bare file (no export folder around it), by its suffix."""
    for target in all_targets().values():
        if target.suffix and str(path).lower().endswith(target.suffix):
            return target
    suffixes = sorted({t.suffix for t in all_targets().values() if t.suffix})
    raise BadInput(f"'{path}' is neither an export folder nor a {' or '.join(suffixes)} file")
