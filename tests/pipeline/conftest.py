"""Exports shared by the pipeline tests (an export takes tens of seconds on 2 cores)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def gc_export(tmp_path_factory):
    """gc-mobilenet for ONNX Runtime: model, stage1, stage2 and manifest. Read it; copy it
    before changing anything."""
    from edgegate.pipeline.export import export

    out = tmp_path_factory.mktemp("gc") / "export"
    export("gc-mobilenet", out, target="onnxruntime")
    return out
