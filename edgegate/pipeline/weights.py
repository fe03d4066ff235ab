"""Where an export's weights came from, so `validate` rebuilds the very model that was exported.

An export records its weights' source in the manifest. Weights that no file holds (a random
initialisation, a user factory's own) are saved into the export folder as ``weights.pt``; a
checkpoint or the shipped weights are recorded by path and SHA-256. `validate` then loads
exactly those, so ``-c`` never needs repeating, and says so when the file has gone or changed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgegate.errors import BadInput
from edgegate.manifest import Manifest, sha256_file
from edgegate.models import LoadedModel, save_checkpoint, shipped_weights

WEIGHTS_FILE = "weights.pt"
SHIPPED, CHECKPOINT, STORED, PROGRAM = "shipped", "checkpoint", "stored", "exported program"


@dataclass(frozen=True)
class WeightsRecord:
    """``source`` is shipped, checkpoint, stored (in the export folder) or exported program."""

    source: str
    label: str  # what reports print: "shipped", "checkpoint ckpt.pt", "random init (...)"
    path: str | None = None  # checkpoint or .pt2 (absolute); shipped: the file's name
    sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "path": self.path, "sha256": self.sha256}


def record_weights(loaded: LoadedModel, checkpoint: Path | None) -> WeightsRecord:
    """Describe where ``loaded``'s weights come from (before any file is written)."""
    if checkpoint is not None:
        path = Path(checkpoint).absolute()
        return WeightsRecord(CHECKPOINT, f"checkpoint {checkpoint}", os.fspath(path), _hash(path))
    if loaded.spec.endswith(".pt2"):
        path = Path(loaded.spec).absolute()
        return WeightsRecord(
            PROGRAM, f"exported program {loaded.spec}", os.fspath(path), _hash(path)
        )
    if loaded.info is None:
        return WeightsRecord(STORED, f"{loaded.origin or 'user model'} (stored in {WEIGHTS_FILE})")
    shipped = shipped_weights(loaded.spec)
    if shipped is None:
        return WeightsRecord(STORED, f"random init (no shipped weights; stored in {WEIGHTS_FILE})")
    return WeightsRecord(SHIPPED, SHIPPED, shipped.name, _hash(shipped))


def _hash(path: Path) -> str | None:
    return sha256_file(path) if path.is_file() else None


def store_weights(loaded: LoadedModel, record: WeightsRecord, directory: Path) -> str | None:
    """Save the weights into the export folder when no file holds them; the file's name."""
    if record.source != STORED:
        return None
    save_checkpoint(directory / WEIGHTS_FILE, loaded.module, loaded.spec)
    return WEIGHTS_FILE


def checkpoint_for(
    manifest: Manifest | None, directory: Path | None, given: Path | None
) -> Path | None:
    """The checkpoint to rebuild an export's reference with: ``given`` (``-c``) if any, else
    what the manifest recorded. BadInput when a recorded file has gone or changed."""
    if given is not None or manifest is None:
        return given
    raw = manifest.extra.get("weights_source")
    if not isinstance(raw, dict):  # made before exports recorded their weights
        return None
    source, path, digest = raw.get("source"), raw.get("path"), raw.get("sha256")
    if source == STORED:
        assert directory is not None
        return directory / WEIGHTS_FILE  # listed and hashed in the manifest's files
    if source == CHECKPOINT:
        file = Path(path)
        if not file.is_file():
            raise BadInput(
                f"the checkpoint this export was made from, '{file}', is missing: pass -c"
            )
        if digest and sha256_file(file) != digest:
            raise BadInput(f"checkpoint '{file}' changed since this export: pass -c")
        return file
    if source == SHIPPED and digest:
        file = shipped_weights(manifest.model)
        if file is None or sha256_file(file) != digest:
            raise BadInput(
                f"the shipped weights of {manifest.model} changed since this export "
                "(another edgegate version?): export again, or pass -c"
            )
    return None
