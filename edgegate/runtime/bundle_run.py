#!/usr/bin/env python3
"""Run an edgegate bundle on the device: its inputs through the device's own runtime.

This file is copied into every bundle as ``run.py``. It needs Python 3, numpy and the bundle's
runtime only (onnxruntime, executorch, coremltools on macOS, or TensorRT's trtexec): never
torch for its own sake, never edgegate. It reads ``bundle.json`` and ``inputs.npz`` beside it,
runs every sample (batch 1, as the device serves them), times warm runs of the first sample,
and writes ``results.json``: the outputs, latency p50/p90/p99, and runtime and device facts.
Copy the bundle back and run ``edgegate judge BUNDLE`` on the host for the verdict.

Usage:
  python3 run.py [--threads N] [--runs 50] [--warmup 5] [-o results.json]
  python3 run.py --trtexec /usr/src/tensorrt/bin/trtexec        (TensorRT kits; build.sh first)
  python3 run.py --from-trtexec DIR     (collect sample_<i>.json from --exportOutput runs and
                                         times.json from --exportTimes, made elsewhere)

Exit status: 0 results written; 2 the bundle or an option is unusable (one line on stderr);
3 the runtime is missing ("runtime missing: ...") or its tool failed on the model ("toolchain
failure: ..." with the tool's own message).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

RESULTS_FORMAT = "edgegate-results-1"
BUNDLE_FORMAT = "edgegate-bundle-1"


class Unusable(Exception):
    """The bundle or an option cannot be used: exit 2."""


class NoRuntime(Exception):
    """The runtime is missing or cannot run on this machine: exit 3."""


class ToolFailed(Exception):
    """The runtime's tool exists but failed on the model (trtexec's error): exit 3, said as a
    toolchain failure, not a missing runtime."""


EXIT_NO_RUNTIME = 3  # design.md: a missing tool or a toolchain failure


# --- small helpers ------------------------------------------------------------------------


def sha256_path(path: Path) -> str:
    """SHA-256 of a file, or of a folder's files (relative paths and contents, sorted)."""
    digest = hashlib.sha256()
    if path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
            digest.update(sha256_path(file).encode())
        return digest.hexdigest()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def percentiles(times_ms: list[float]) -> dict:
    """p50/p90/p99 by the nearest rank, and the mean, in milliseconds."""
    ordered = sorted(times_ms)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]

    return {
        "runs": len(ordered),
        "p50": round(rank(0.50), 4),
        "p90": round(rank(0.90), 4),
        "p99": round(rank(0.99), 4),
        "mean": round(sum(ordered) / len(ordered), 4),
    }


def load_trtexec_json(path: Path):
    """trtexec may write nan/inf as bare words: read them as JSON numbers."""
    text = path.read_text()
    for word, value in (
        ("-nan", "NaN"),
        ("nan", "NaN"),
        ("-inf", "-Infinity"),
        ("inf", "Infinity"),
    ):
        text = text.replace(f" {word},", f" {value},").replace(f" {word} ]", f" {value} ]")
    return json.loads(text)


# --- one class per runtime: load(), run(feed) -> {name: array}, info() ---------------------


class OnnxRuntimeBackend:
    def __init__(self, bundle: dict, root: Path, threads: int | None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise NoRuntime("onnxruntime is not installed: pip install onnxruntime") from None
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.version = ort.__version__
        path = root / bundle["model_file"]
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.outputs = list(bundle["outputs"])

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.outputs, self.session.run(self.outputs, feed), strict=True))


class ExecuTorchBackend:
    """The .pte's ``forward`` through ExecuTorch's runtime; inputs in the bundle's order."""

    def __init__(self, bundle: dict, root: Path, threads: int | None) -> None:
        try:
            import torch  # ExecuTorch's Python runtime takes and returns torch tensors
            from executorch.runtime import Runtime
        except ImportError:
            raise NoRuntime("executorch is not installed: pip install executorch") from None
        self.torch = torch
        try:
            from importlib.metadata import version

            self.version = version("executorch")
        except Exception:
            self.version = "unknown"
        program = Runtime.get().load_program(root / bundle["model_file"])
        self.method = program.load_method("forward")
        self.inputs = [spec["name"] for spec in bundle["inputs"]]
        self.outputs = list(bundle["outputs"])

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [self.torch.from_numpy(np.ascontiguousarray(feed[name])) for name in self.inputs]
        values = self.method.execute(args)
        return {name: np.asarray(v.numpy()) for name, v in zip(self.outputs, values, strict=False)}


class CoreMLBackend:
    """``MLModel.predict``: Core ML runs models on macOS (and iOS) only."""

    def __init__(self, bundle: dict, root: Path, threads: int | None) -> None:
        if platform.system() != "Darwin":
            raise NoRuntime(f"Core ML predict needs macOS; this is {platform.system()}")
        try:
            import coremltools as ct
        except ImportError:
            raise NoRuntime("coremltools is not installed: pip install coremltools") from None
        self.version = ct.__version__
        self.model = ct.models.MLModel(str(root / bundle["model_file"]))
        self.outputs = list(bundle["outputs"])

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self.model.predict(feed)
        return {name: np.asarray(out[name]) for name in self.outputs}


class TrtexecBackend:
    """TensorRT through trtexec (what every JetPack and TensorRT install has): each sample is
    one ``--loadInputs``/``--exportOutput`` run of the engine that the kit's build.sh made."""

    def __init__(self, bundle: dict, root: Path, threads: int | None, trtexec: str | None) -> None:
        found = trtexec or shutil.which("trtexec") or "/usr/src/tensorrt/bin/trtexec"
        if not Path(found).is_file() and shutil.which(found) is None:
            raise NoRuntime("trtexec is not found: pass --trtexec PATH (TensorRT's bin folder)")
        record = bundle["tensorrt"]
        self.trtexec = found
        self.engine = root / record["engine"]
        self.plugin = root / record["plugin"] if record.get("plugin") else None
        if not self.engine.is_file():
            raise NoRuntime(f"{self.engine} is missing: run {root / record['build']} first")
        self.bundle, self.root = bundle, root
        self.version = "trtexec"
        self.scratch = Path(tempfile.mkdtemp(prefix="edgegate-trtexec-"))  # removed by close()

    def close(self) -> None:
        """Remove the scratch folder of trtexec's output files."""
        shutil.rmtree(self.scratch, ignore_errors=True)

    def _command(self, sample: int, extra: list[str]) -> list[str]:
        shapes = ",".join(
            f"{s['name']}:{'x'.join(str(d) for d in s['shape'])}" for s in self.bundle["inputs"]
        )
        loads = ",".join(
            f"{s['name']}:{self.root / self.bundle['raw_inputs'][str(sample)][s['name']]}"
            for s in self.bundle["inputs"]
        )
        command = [self.trtexec, f"--loadEngine={self.engine}", f"--shapes={shapes}"]
        if self.plugin is not None and self.plugin.is_file():
            command.append(f"--dynamicPlugins={self.plugin}")
        return [*command, f"--loadInputs={loads}", *extra]

    def _call(self, command: list[str]) -> None:
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise ToolFailed(
                f"trtexec failed on {self.engine.name} (exit {done.returncode}): "
                f"{tool_message(done.stdout + chr(10) + done.stderr)}"
            )

    def run_sample(self, sample: int) -> dict[str, np.ndarray]:
        out = self.scratch / f"sample_{sample}.json"
        once = ["--warmUp=0", "--iterations=1", "--duration=0", f"--exportOutput={out}"]
        self._call(self._command(sample, once))
        return outputs_from_trtexec(out)

    def time(self, runs: int, warmup: int) -> list[float]:
        times = self.scratch / "times.json"
        timing = [
            f"--iterations={runs}",
            "--duration=0",
            f"--exportTimes={times}",
            f"--warmUp={max(warmup, 1) * 10}",
        ]  # fmt: skip  (trtexec warms up in ms)
        self._call(self._command(0, timing))
        return times_from_trtexec(times)


def tool_message(output: str) -> str:
    """The line of a tool's output that says what went wrong: trtexec's last error line
    ("[E] ..."), else its last line that is not the closing "&&&& FAILED" banner."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if "[E]" in line or "error" in line.lower()]
    if errors:
        return errors[-1]
    plain = [line for line in lines if not line.startswith("&&&&")]
    return (plain or lines or ["no output"])[-1]


def outputs_from_trtexec(path: Path) -> dict[str, np.ndarray]:
    """{name: array} from one --exportOutput file."""
    outputs = {}
    for record in load_trtexec_json(path):
        dims = (
            tuple(int(d) for d in record["dimensions"].split("x")) if record["dimensions"] else ()
        )
        outputs[record["name"]] = np.asarray(record["values"], dtype=np.float32).reshape(dims)
    return outputs


def times_from_trtexec(path: Path) -> list[float]:
    return [float(t["latencyMs"]) for t in load_trtexec_json(path) if "latencyMs" in t]


BACKENDS = {
    "onnxruntime": OnnxRuntimeBackend,
    "executorch": ExecuTorchBackend,
    "coreml": CoreMLBackend,
}


# --- the run ------------------------------------------------------------------------------


def read_bundle(root: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """bundle.json and the inputs, checked against the hashes bundle.json records."""
    try:
        bundle = json.loads((root / "bundle.json").read_text())
    except (OSError, ValueError) as exc:
        raise Unusable(f"{root / 'bundle.json'} cannot be read: {exc}") from None
    if bundle.get("format") != BUNDLE_FORMAT:
        raise Unusable(f"{root / 'bundle.json'} is not an {BUNDLE_FORMAT} file")
    inputs_file = root / "inputs.npz"
    if not inputs_file.is_file():
        raise Unusable(f"{inputs_file} is missing")
    if sha256_path(inputs_file) != bundle["files"].get("inputs.npz"):
        raise Unusable(f"{inputs_file} does not match the SHA-256 in bundle.json")
    with np.load(inputs_file, allow_pickle=False) as npz:
        inputs = {spec["name"]: npz[spec["name"]] for spec in bundle["inputs"]}
    return bundle, inputs


def device_info(threads: int | None) -> dict:
    return {
        "machine": platform.machine(),
        "system": platform.platform(),
        "processor": platform.processor() or None,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "threads": threads,
    }


def run_samples(backend, inputs: dict[str, np.ndarray], samples: int) -> list[dict]:
    per_sample = []
    for i in range(samples):
        if hasattr(backend, "run_sample"):
            per_sample.append(backend.run_sample(i))
        else:
            per_sample.append(backend.run({k: v[i : i + 1] for k, v in inputs.items()}))
        if sys.stderr.isatty():  # a progress line for a person, nothing for a log
            print(f"\rsample {i + 1}/{samples}", end="", file=sys.stderr, flush=True)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    return per_sample


def time_runs(backend, inputs: dict[str, np.ndarray], runs: int, warmup: int) -> list[float]:
    if hasattr(backend, "time"):
        return backend.time(runs, warmup)
    first = {k: v[0:1] for k, v in inputs.items()}
    for _ in range(warmup):
        backend.run(first)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        backend.run(first)
        times.append((time.perf_counter() - start) * 1e3)
    return times


def stack(per_sample: list[dict], names: list[str]) -> dict[str, dict]:
    """Join the samples' outputs along the batch axis, as JSON-ready records."""
    outputs = {}
    for name in names:
        missing = [i for i, out in enumerate(per_sample) if name not in out]
        if missing:
            raise Unusable(f"the runtime gave no output '{name}' for sample {missing[0]}")
        value = np.concatenate([np.asarray(out[name], dtype=np.float32) for out in per_sample])
        outputs[name] = {"shape": list(value.shape), "dtype": "float32", "data": value.tolist()}
    return outputs


def collect_trtexec(bundle: dict, folder: Path) -> tuple[list[dict], list[float]]:
    """Outputs and times written by trtexec runs made outside run.py."""
    per_sample = []
    for i in range(bundle["samples"]):
        path = folder / f"sample_{i}.json"
        if not path.is_file():
            raise Unusable(f"{path} is missing (one --exportOutput file per sample)")
        per_sample.append(outputs_from_trtexec(path))
    times = folder / "times.json"
    return per_sample, times_from_trtexec(times) if times.is_file() else []


def open_backend(bundle: dict, root: Path, threads: int | None, trtexec: str | None):
    """The bundle's runtime with its model loaded; a model it refuses is one line, exit 2."""
    runtime = bundle["runtime"]
    if runtime not in (*BACKENDS, "tensorrt"):
        raise Unusable(f"bundle.json names runtime '{runtime}', which run.py lacks")
    try:
        if runtime == "tensorrt":
            return TrtexecBackend(bundle, root, threads, trtexec)
        return BACKENDS[runtime](bundle, root, threads)
    except (Unusable, NoRuntime, ToolFailed):
        raise
    except Exception as exc:  # each runtime raises its own types for a file it cannot load
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise Unusable(f"{runtime} cannot load {bundle['model_file']}: {first}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="CPU threads of the runtime")
    parser.add_argument("--runs", type=int, default=50, help="timed warm runs")
    parser.add_argument("--warmup", type=int, default=5, help="untimed runs first")
    parser.add_argument("-o", "--out", type=Path, default=None, help="default: results.json")
    parser.add_argument("--trtexec", default=None, help="trtexec to run a TensorRT kit with")
    parser.add_argument(
        "--from-trtexec",
        type=Path,
        default=None,
        help="folder of sample_<i>.json (--exportOutput) and times.json",
    )
    args = parser.parse_args(argv)
    root = Path(__file__).resolve().parent
    out = args.out or root / "results.json"
    try:
        if args.runs < 1 or args.warmup < 0 or (args.threads is not None and args.threads < 1):
            raise Unusable("--runs and --threads must be at least 1, --warmup at least 0")
        bundle, inputs = read_bundle(root)
        runtime = bundle["runtime"]
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        if args.from_trtexec is not None:
            per_sample, times = collect_trtexec(bundle, args.from_trtexec)
            version = "trtexec (collected)"
        else:
            backend = open_backend(bundle, root, args.threads, args.trtexec)
            try:
                per_sample = run_samples(backend, inputs, bundle["samples"])
                times = time_runs(backend, inputs, args.runs, args.warmup)
            finally:  # a failed run leaves no scratch behind either
                if hasattr(backend, "close"):
                    backend.close()
            version = backend.version
        results = {
            "format": RESULTS_FORMAT,
            "bundle_id": bundle["id"],
            "runtime": {"name": runtime, "version": version},
            "device": device_info(args.threads),
            "started": started,
            "model_sha256": {name: sha256_path(root / name) for name in bundle["model_files"]},
            "latency_ms": percentiles(times) if times else None,
            "outputs": stack(per_sample, bundle["outputs"]),
        }
    except Unusable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except NoRuntime as exc:
        print(f"error: runtime missing: {exc}", file=sys.stderr)
        return EXIT_NO_RUNTIME
    except ToolFailed as exc:
        print(f"error: toolchain failure: {exc}", file=sys.stderr)
        return EXIT_NO_RUNTIME
    partial = out.with_name(f".{out.name}.partial")
    partial.write_text(json.dumps(results) + "\n")
    os.replace(partial, out)  # never a half-written results.json
    latency = results["latency_ms"]
    p50 = f", p50 {latency['p50']} ms over {latency['runs']} runs" if latency else ""
    print(f"wrote {out}: {bundle['samples']} samples on {runtime} {version}{p50}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
