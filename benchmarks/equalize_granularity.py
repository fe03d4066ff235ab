"""What per-tensor weights cost an image model, and what cross-layer equalization wins back.

    python benchmarks/equalize_granularity.py                          # mobilenet-v3-large-se
    python benchmarks/equalize_granularity.py --model mobilenet-v3-se --calib-samples 64
    python benchmarks/equalize_granularity.py --reuse out/             # score earlier runs

Runs `edgegate quantize MODEL` (default profile, the task's built-in data) four times: weight
scales per channel or per tensor, each without and with ``--equalize``, into ``--out``
(``channel``, ``channel-eq``, ``tensor``, ``tensor-eq``), then scores each shipped INT8 ONNX
against the float model on the test split and prints one row per run:
- top-1 of the INT8 export and its drop against float, in points (the quantize verdict's);
- logit SNR (dB) of the export against float: finer than top-1 on a small test split, where one
  image is a fraction of a point;
- the equalization's per-channel weight range ratio, median and worst, before -> after.
About 6 minutes a run for mobilenet-v3-large-se on 2 cores (the range checks are most of it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

RUNS = {
    "channel": ("channel", False),
    "channel-eq": ("channel", True),
    "tensor": ("tensor", False),
    "tensor-eq": ("tensor", True),
}


def snr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    """10 log10(signal power / error power) over all logits."""
    error = float(((candidate - reference) ** 2).sum())
    signal = float((reference**2).sum())
    return float("inf") if error == 0 else 10.0 * np.log10(signal / error)


def run(model: str, out: Path, name: str, calib_samples: int | None) -> None:
    from edgegate.pipeline.quantize import quantize

    granularity, equalize = RUNS[name]
    quantize(
        model,
        out / name,
        granularity=granularity,
        equalize=equalize,
        calib_samples=calib_samples,
        max_drop=100.0,
    )


def score(model: str, directory: Path) -> dict[str, object]:
    from edgegate.models import load_model
    from edgegate.pipeline.tasks import resolve_task

    report = json.loads((directory / "report.json").read_text())
    loaded = load_model(model)
    kind = resolve_task(loaded, None)
    inputs = kind.model_inputs(kind.load(loaded, None, "test")).numpy()
    with torch.no_grad():
        reference = loaded.module.eval()(torch.from_numpy(inputs))
    reference = (reference[0] if isinstance(reference, tuple) else reference).numpy()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(
        str(directory / "model.int8.onnx"), options, providers=["CPUExecutionProvider"]
    )
    logits = np.concatenate(
        [
            session.run(None, {session.get_inputs()[0].name: inputs[i : i + 8]})[0]
            for i in range(0, len(inputs), 8)
        ]
    )
    accuracy = report["accuracy"]
    equalization = report.get("equalization") or {}
    summary = equalization.get("summary") or {}
    return {
        "float": accuracy["float"]["top1"],
        "int8": accuracy["int8_onnx"]["top1"],
        "drop": report["drop_points"],
        "snr_db": round(snr_db(reference, logits), 2),
        "ratio": (
            f"{summary['median_ratio_before']} -> {summary['median_ratio_after']}, worst "
            f"{summary['worst_ratio_before']} -> {summary['worst_ratio_after']}"
            if summary
            else ""
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenet-v3-large-se")
    parser.add_argument("--out", type=Path, default=Path("equalize-bench"))
    parser.add_argument("--calib-samples", type=int, default=None)
    parser.add_argument("--reuse", type=Path, help="score the runs already in this folder")
    args = parser.parse_args(argv)
    out = args.reuse or args.out
    if args.reuse is None:
        for name in RUNS:
            print(f"quantize {args.model} ({name}) ...", file=sys.stderr, flush=True)
            run(args.model, out, name, args.calib_samples)
    print(f"{args.model}: INT8 ONNX vs float on the test split")
    print(f"{'run':<11} {'float':>6} {'int8':>6} {'drop':>5} {'SNR dB':>7}  range ratio")
    for name in RUNS:
        if not (out / name / "report.json").exists():
            print(f"{name:<11} (no run in {out / name})")
            continue
        row = score(args.model, out / name)
        print(
            f"{name:<11} {row['float']:>6.2f} {row['int8']:>6.2f} {row['drop']:>5.2f} "
            f"{row['snr_db']:>7.2f}  {row['ratio']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
