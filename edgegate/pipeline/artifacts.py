"""An export on disk: the folder (or bare file), its manifest, its target, and its parts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgegate.dims import BATCH, DimRange, FixedDim
from edgegate.errors import BadInput
from edgegate.manifest import MANIFEST_NAME, InputSpec, Manifest, read_manifest
from edgegate.runtime import Runner
from edgegate.targets import Target, all_targets, for_file, get_target

MODEL_STEM = "model"
STAGE_STEMS = ("stage1", "stage2")  # a gated-compression model's deployed pair


@dataclass(frozen=True)
class Artifact:
    """An export folder (with manifest) or a bare model file, and the target that runs it."""

    model_path: Path
    manifest: Manifest | None
    directory: Path | None
    target: Target

    def part(self, name: str) -> Path | None:
        """A file the manifest lists (and hashed), or None."""
        if self.directory is None or self.manifest is None or name not in self.manifest.files:
            return None
        return self.directory / name

    def stage(self, stem: str) -> Path | None:
        return self.part(self.target.file_name(stem))

    @property
    def precision(self) -> str:
        return self.manifest.precision if self.manifest is not None else "fp32"

    @property
    def quant(self) -> dict | None:
        return self.manifest.quant if self.manifest is not None else None

    @property
    def streaming(self) -> bool:
        """A streaming step (states in and out): `quantize --streaming` or `export --streaming`."""
        if self.manifest is None:
            return False
        return bool((self.quant or {}).get("streaming")) or "streaming" in self.manifest.extra

    @property
    def example_shape(self) -> list[int] | None:
        """The shape the export was made at (its first input), if recorded."""
        if self.manifest is None:
            return None
        return next(iter(self.manifest.extra.get("example_shapes", {}).values()), None)

    @property
    def input_specs(self) -> list[InputSpec]:
        if self.manifest is not None:
            return self.manifest.inputs
        with self.runner() as runner:
            return [InputSpec(s.name, list(s.shape), s.dtype) for s in runner.input_specs()]

    def runner(self, path: Path | None = None, threads: int | None = None) -> Runner:
        """The target's runner for one of the export's files, fed at most the batch its
        manifest declares in one call."""
        path = path or self.model_path
        runner = self.target.runner(path, threads=threads)
        runner.batch_limit = self.max_batch(self.stem_of(path))
        return runner

    def stem_of(self, path: Path) -> str:
        """The graph a file of the export holds ("model", "stage1", "model.int8")."""
        name = Path(path).name
        suffix = self.target.suffix
        return name[: -len(suffix)] if suffix and name.endswith(suffix) else Path(name).stem

    def ranges(self, stem: str) -> tuple[list[DimRange], list[FixedDim]]:
        """The declared ranges and fixed dims of one graph, as its manifest records them."""
        record = (self.manifest.ranges if self.manifest else {}).get(stem, {})
        ranges = [DimRange.from_dict(-1, r) for r in record.get("ranges", [])]
        fixed = [FixedDim(**f) for f in record.get("fixed", [])]
        return ranges, fixed

    def max_batch(self, stem: str) -> int | None:
        """The largest batch a graph declares: its batch range's top, or its fixed batch;
        None where the manifest does not say (an export made before ranges were recorded)."""
        ranges, fixed = self.ranges(stem)
        for r in ranges:
            if r.name == BATCH:
                return r.high
        for f in fixed:
            if f.name == BATCH:
                return f.size
        return None

    def has_two_stages(self) -> bool:
        return all(self.stage(stem) is not None for stem in STAGE_STEMS)


def _is_model_package(path: Path) -> bool:
    """A folder that is itself a model file (a Core ML .mlpackage), not an export folder."""
    return not (path / MANIFEST_NAME).exists() and any(
        t.suffix and path.name.lower().endswith(t.suffix) for t in all_targets().values()
    )


def open_artifact(artifact: str | Path) -> Artifact:
    """Open an export folder (manifest and hashes checked) or a bare model file."""
    path = Path(artifact)
    if path.is_dir() and not _is_model_package(path):
        manifest = read_manifest(path)
        target = get_target(manifest.target)
        model_file = manifest.extra.get("model_file", target.file_name(MODEL_STEM))
        if model_file not in manifest.files:
            raise BadInput(f"'{path}' holds no {model_file} (its manifest lists {manifest.files})")
        return Artifact(path / model_file, manifest, path, target)
    target = for_file(path)
    if not path.exists():
        raise BadInput(f"'{path}' does not exist")
    sibling = path.parent / MANIFEST_NAME
    if sibling.is_file():  # a file inside an export folder: use the folder's record
        manifest = read_manifest(path.parent)
        if path.name in manifest.files:
            return Artifact(path, manifest, path.parent, get_target(manifest.target))
    return Artifact(path, None, None, target)
