"""The export stage: a model (and a GC model's two stages) into a target's files plus manifest."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from edgegate.atomic import staged_directory
from edgegate.manifest import MANIFEST_NAME, Manifest, sha256_file, write_manifest
from edgegate.models import load_model
from edgegate.outputs import check_output_dir
from edgegate.pipeline.tasks import resolve_task
from edgegate.pipeline.weights import record_weights, store_weights
from edgegate.progress import SILENT, Progress
from edgegate.targets import get_target


def export(
    model: str,
    output_dir: Path,
    *,
    target: str = "onnx",
    checkpoint: Path | None = None,
    input_size: int | None = None,
    seq_len: int | None = None,
    trust_code: bool = False,
    task: str | None = None,
    progress: Progress = SILENT,
) -> dict[str, Any]:
    """Export ``model`` for ``target`` into ``output_dir`` with a manifest (atomically)."""
    chosen = get_target(target)
    check_output_dir(output_dir)
    chosen.check_available()
    loaded = load_model(model, checkpoint, trust_code=trust_code)
    kind = resolve_task(loaded, task)
    module = loaded.module.eval()
    example = kind.example(loaded, batch=1, input_size=input_size, seq_len=seq_len)
    weights = record_weights(loaded, checkpoint)
    metadata = {
        "model": loaded.spec,
        "task": kind.name,
        "target": chosen.name,
        "weights": weights.label,
    }
    parts = kind.export_parts(module, example, metadata)
    with staged_directory(output_dir) as stage:
        files: dict[str, str] = {}
        ops: set[str] = set()
        inputs = None
        for part in parts:
            with progress.phase(f"export {chosen.file_name(part.stem)}"):
                written = chosen.export(part, stage)
            files[written.path.name] = sha256_file(written.path)
            ops.update(written.custom_ops)
            inputs = inputs or written.inputs
        stored = store_weights(loaded, weights, stage)
        if stored is not None:
            files[stored] = sha256_file(stage / stored)
        manifest = Manifest(
            model=loaded.spec,
            target=chosen.name,
            precision="fp32",
            inputs=inputs or [],
            outputs=list(kind.output_names),
            task=kind.name,
            files=files,
            custom_ops=sorted(ops),
            extra={
                "model_file": chosen.file_name(parts[0].stem),
                "example_shapes": {kind.input_name: list(example[0].shape)},
                **kind.settings(module),
                "weights": weights.label,
                "weights_source": weights.to_dict(),
            },
        )
        write_manifest(stage, manifest)
    return {
        "output_dir": os.fspath(output_dir),
        "model": loaded.spec,
        "target": chosen.name,
        "files": sorted([*files, MANIFEST_NAME]),
        "custom_ops": manifest.custom_ops,
        "weights": weights.label,
        "inputs": [asdict(spec) for spec in manifest.inputs],
    }
