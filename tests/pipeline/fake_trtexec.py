"""A stand-in for TensorRT's trtexec, for machines without TensorRT or a GPU.

It speaks the part of trtexec's command line a bundle's run.py uses (--loadEngine,
--loadInputs, --shapes, --exportOutput, --exportTimes, --iterations) and writes files in
trtexec's formats. The "engine" it loads is the kit's ONNX file beside it, run the way edgegate
runs a kit on a host (ONNX Runtime with the scans' fallbacks). It checks run.py's plumbing:
the raw input files, the flags and the JSON it reads back, not TensorRT's arithmetic.

With FAKE_TRTEXEC_ERROR set it fails as trtexec fails on a model it cannot run: that message
as an error line, the closing FAILED banner, exit 1 (before anything heavy is imported).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def flags(argv: list[str]) -> dict[str, str]:
    parsed = {}
    for arg in argv:
        key, _, value = arg.partition("=")
        parsed[key.lstrip("-")] = value
    return parsed


def main(argv: list[str]) -> int:
    error = os.environ.get("FAKE_TRTEXEC_ERROR")
    if error:
        print("&&&& RUNNING TensorRT.trtexec [fake] # trtexec " + " ".join(argv))
        print(f"[01/01/2025-00:00:00] [E] {error}")
        print("&&&& FAILED TensorRT.trtexec [fake] # trtexec " + " ".join(argv))
        return 1
    from edgegate.targets import get_target

    given = flags(argv)
    engine = Path(given["loadEngine"])
    if not engine.is_file():
        print(f"Cannot open engine file: {engine}", file=sys.stderr)
        return 1
    shapes = {}
    for item in given["shapes"].split(","):
        name, _, dims = item.rpartition(":")
        shapes[name] = tuple(int(d) for d in dims.split("x"))
    with get_target("tensorrt").runner(engine.with_suffix(".onnx")) as runner:
        dtypes = {spec.name: spec.dtype for spec in runner.input_specs()}
        feed = {}
        for item in given["loadInputs"].split(","):
            name, _, path = item.partition(":")
            raw = np.fromfile(path, dtype=np.dtype(dtypes[name]).newbyteorder("<"))
            feed[name] = raw.reshape(shapes[name]).astype(dtypes[name])
        times = []
        for _ in range(int(given.get("iterations", "1"))):
            start = time.perf_counter()
            out = runner.run(feed)
            times.append((time.perf_counter() - start) * 1e3)
    if "exportOutput" in given:
        records = [
            {"name": name, "dimensions": "x".join(str(d) for d in value.shape),
             "values": value.astype(np.float32).ravel().tolist()}
            for name, value in out.items()
        ]  # fmt: skip
        Path(given["exportOutput"]).write_text(json.dumps(records))
    if "exportTimes" in given:
        runs = [{"startHostMs": i, "latencyMs": t} for i, t in enumerate(times)]
        Path(given["exportTimes"]).write_text(json.dumps(runs))
    print("&&&& PASSED TensorRT.trtexec [fake]")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
