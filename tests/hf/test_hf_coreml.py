"""`export --target coreml` + `validate` of tiny transformers LMs, checked in edgegate's
emulation of the ML Program (Core ML predicts on macOS only).

Qwen3-Next's attention mask is a ``where`` whose condition is wider than its values, which
coremltools declared as a scalar; RecurrentGemma keeps a bfloat16 buffer, which coremltools
cannot take. Both export, and validate passes over the declared ranges.
"""

from __future__ import annotations

import pytest

pytest.importorskip("coremltools", reason="coremltools not installed (pip install '.[coreml]')")


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    """A few kB of text, so validation's perplexity pass in the emulator stays quick."""
    from edgegate.data import stdlib_text

    path = tmp_path_factory.mktemp("text") / "test.txt"
    path.write_bytes(stdlib_text("test")[:2048].numpy().tobytes())
    return path


@pytest.mark.slow
@pytest.mark.parametrize("folder", ["qwen3_next_dir", "recurrent_gemma_dir"])
def test_export_coreml_and_validate(run_cli, request, text, tmp_path, folder):
    model = request.getfixturevalue(folder)
    out = tmp_path / "cm"
    exported = run_cli(
        "export", f"hf:{model}", "--target", "coreml", "--seq-len", "32", "-o", out, "--json"
    )
    assert exported.code == 0, exported.stderr
    assert (out / "model.mlpackage").is_dir()
    verdict = run_cli("validate", out, "--data", text, "--parity-samples", "32", "--json")
    assert verdict.code == 0, verdict.stderr
    report = verdict.json()
    assert report["passed"], report
    ranges = report["ranges"]["model"]
    assert ranges["passed"] and len(ranges["probes"]) >= 3, ranges
