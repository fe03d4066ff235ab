"""The deploy stage: export, validate, bench (and optionally quantize) in one go, with reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgegate.jsonio import write_json
from edgegate.outputs import check_output_dir
from edgegate.pipeline.bench import bench
from edgegate.pipeline.export import export
from edgegate.pipeline.summary import summary_sections
from edgegate.pipeline.validate import validate
from edgegate.progress import SILENT, Progress
from edgegate.targets import get_target
from edgegate.validate.report import write_markdown

DEFAULT_DEPLOY_MODEL = "gc-mobilenet"
INT8_DIR = "int8"


def deploy(
    model: str = DEFAULT_DEPLOY_MODEL,
    output_dir: Path = Path("edgegate-out"),
    *,
    target: str = "onnxruntime",
    checkpoint: Path | None = None,
    data: str | None = None,
    runs: int = 50,
    threads: int | None = 2,
    trust_code: bool = False,
    int8_profile: str | None = None,
    progress: Progress = SILENT,
) -> dict[str, Any]:
    """Export, validate (parity + accuracy), bench; write report.json and report.md.

    With ``int8_profile`` it also quantizes (PTQ, minmax) into ``output_dir/int8`` and
    validates and benches that export too. ``passed`` is False when any check failed.
    """
    get_target(target).check_available()
    if int8_profile is not None:
        from edgegate.quant.profiles import get_profile

        get_profile(int8_profile)  # an unknown profile fails now, not after the float stages
    check_output_dir(output_dir)
    with progress.phase("deploy: export"):
        exported = export(
            model,
            output_dir,
            target=target,
            checkpoint=checkpoint,
            trust_code=trust_code,
            progress=progress,
        )
    with progress.phase("deploy: validate"):
        validated = validate(output_dir, data=data, trust_code=trust_code, progress=progress)
    with progress.phase("deploy: bench"):
        timed = bench(output_dir, runs=runs, threads=threads, progress=progress)
    summary: dict[str, Any] = {
        "model": exported["model"],
        "target": target,
        "passed": bool(validated["passed"]),
        "export": exported,
        "validate": validated,
        "bench": timed,
    }
    if int8_profile is not None:
        from edgegate.pipeline.quantize import quantize

        int8_dir = Path(output_dir) / INT8_DIR
        with progress.phase("deploy: quantize"):
            quantized = quantize(
                model,
                int8_dir,
                profile=int8_profile,
                checkpoint=checkpoint,
                trust_code=trust_code,
                progress=progress,
            )
        with progress.phase("deploy: validate int8"):
            validated8 = validate(int8_dir, data=data, trust_code=trust_code, progress=progress)
        with progress.phase("deploy: bench int8"):
            timed8 = bench(int8_dir, runs=runs, threads=threads, progress=progress)
        summary["passed"] = (
            summary["passed"] and bool(quantized["passed"]) and bool(validated8["passed"])
        )
        summary["int8"] = {"quantize": quantized, "validate": validated8, "bench": timed8}
    write_json(Path(output_dir) / "report.json", summary)
    write_markdown(
        Path(output_dir) / "report.md",
        f"edgegate deploy: {exported['model']}",
        summary_sections(summary),
    )
    return summary
