"""The artifact manifest written beside every exported file (design.md §2)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgegate import __version__
from edgegate.atomic import atomic_write
from edgegate.errors import BadInput

MANIFEST_NAME = "manifest.json"
FORMAT = "edgegate-manifest-1"


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: list[int | str]  # str = a symbolic (dynamic) dim such as "batch"
    dtype: str


@dataclass
class Manifest:
    model: str
    target: str
    precision: str
    inputs: list[InputSpec]
    outputs: list[str]
    task: str | None = None
    files: dict[str, str] = field(default_factory=dict)  # name -> sha256
    custom_ops: list[str] = field(default_factory=list)
    # per graph (its stem): the declared range of each dynamic dim, with the sizes checked
    # against PyTorch, and the dims that are fixed with the reason (``edgegate.dims``)
    ranges: dict[str, dict[str, Any]] = field(default_factory=dict)
    quant: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    edgegate_version: str = __version__
    format: str = FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def sha256_file(path: Path) -> str:
    """SHA-256 of a file; of a folder (a Core ML .mlpackage), over its files' relative paths
    and contents in sorted order, so any change inside it changes the digest."""
    path = Path(path)
    if path.is_dir():
        digest = hashlib.sha256()
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
            digest.update(sha256_file(file).encode())
        return digest.hexdigest()
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: Path, manifest: Manifest) -> Path:
    path = directory / MANIFEST_NAME
    with atomic_write(path, "w") as fh:
        fh.write(manifest.to_json())
    return path


def read_manifest(directory: Path) -> Manifest:
    """Read and check a manifest; every file it lists must exist with its recorded hash."""
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise BadInput(f"'{directory}' has no {MANIFEST_NAME}: is it an edgegate export folder?")
    try:
        raw = json.loads(path.read_text())
        raw["inputs"] = [InputSpec(**spec) for spec in raw["inputs"]]
        manifest = Manifest(**raw)
    except (ValueError, TypeError, KeyError) as exc:
        raise BadInput(f"'{path}' is not a valid edgegate manifest ({exc})") from None
    for name, digest in manifest.files.items():
        file = directory / name
        if not file.exists():
            raise BadInput(f"'{path}' lists '{name}', which is missing from '{directory}'")
        if sha256_file(file) != digest:
            raise BadInput(f"'{file}' does not match the SHA-256 recorded in '{path}'")
    return manifest
