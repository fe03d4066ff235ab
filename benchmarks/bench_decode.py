"""Decode speed of gated LMs: tokens per second of the streaming step, token by token and as a
prefill, per precision and runtime.

Usage: .venv/bin/python benchmarks/bench_decode.py
       [--models gla-lm,gla-lm-25m] [--precisions fp32,int8,w4] [--runtimes ort,executorch]
       [--steps 128] [--prefill 512] [--prompt 16] [--threads 2] [--rounds 5]
       [--checkpoint gla-lm-25m=ckpt.pt] [--work-dir DIR] [--json-out decode.json] [--quick]

Every file is made by edgegate's own pipeline, as a user makes it: FP32 by
``edgegate.pipeline.export.export(..., streaming=True)`` (`edgegate export --streaming`), INT8 by
``edgegate.pipeline.quantize.quantize(..., streaming=True)`` under the runtime's profile
(`edgegate quantize --streaming`), W4 by the same call with ``scheme="w4", group_size=32``.
Each is the step ``(tokens, state0, ...) -> (logits, new_state0, ...)``. A cell the pipeline
refuses prints as ``n/a: <its reason>`` (ExecuTorch's INT8 is PT2E, which has no streaming
path).

Two speeds per row, batch 1, measured round-robin over all of a model's rows (each round
runs every row once, so load on the machine hits them alike; the median round is reported):
- decode: a ``--prompt``-token prompt from zero states, then ``--steps`` calls of one token
  each, every call's new states fed back as the next call's and its argmax as the next token
  (greedy decoding); tokens/s = steps / time of those calls;
- prefill: one call over ``--prefill`` tokens of stdlib text from zero states; tokens/s =
  prefill / its time.
ONNX Runtime runs in the benchmarks' non-spinning session (``ort_profile.benchmark_session``),
ExecuTorch through edgegate's runner (its thread pool sized to ``--threads``); both are fed
numpy arrays and hand back numpy arrays each call, as a Python decode loop does.

Peak memory is measured apart from the timing, one fresh child process per row: the child
imports only the row's runtime, reads its resident high-water mark (``VmHWM`` in
/proc/self/status), loads the file, runs the prefill and the decode once, and reads ``VmHWM``
again. ``peak_rss_mb`` is the child's high-water mark (runtime and Python included);
``model_rss_mb`` is what loading and running the row added to it. A child per row, since a
process's high-water mark only grows: measured in the timing process, each row would carry
the peaks of the rows loaded before it.

Speed depends on the weights' shapes, not their values: a zoo LM without shipped weights
(``gla-lm-25m``) runs from its random initialisation unless ``--checkpoint`` gives one (INT8
is still calibrated and judged by the pipeline; its verdict is in the JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
RUNTIMES = {"ort": "onnxruntime", "executorch": "executorch"}  # bench name -> edgegate target
PRECISIONS = ("fp32", "int8", "w4")
W4_GROUP = 32
TOKENS = "tokens"


@dataclass
class Cell:
    """One row's file (or why it has none) and its measurements."""

    model: str
    precision: str
    runtime: str
    path: str | None = None
    na: str | None = None
    file_mb: float | None = None
    build_s: float | None = None
    verdict: str | None = None  # INT8/W4: the pipeline's judgement of the file
    decode_tok_s: float | None = None
    prefill_tok_s: float | None = None
    decode_vs_fp32: float | None = None
    prefill_vs_fp32: float | None = None
    peak_rss_mb: float | None = None
    model_rss_mb: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.model, self.precision, self.runtime)


# --- building the files ------------------------------------------------------------------


def export_seq_len(target_bounded: bool, prefill: int) -> int:
    """The ``--seq-len`` a file is made at so that its declared lengths reach ``prefill``: a
    target whose lengths stop at the traced one (ExecuTorch) is traced at ``prefill``; ONNX
    Runtime declares up to twice the traced length."""
    return prefill if target_bounded else max(1, -(-prefill // 2))


def first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def model_file(directory: Path) -> Path:
    """The model file of an export folder, as its manifest names it."""
    from edgegate.manifest import read_manifest

    return directory / read_manifest(directory).extra["model_file"]


def build_cell(
    cell: Cell,
    out: Path,
    prefill: int,
    calib_samples: int,
    checkpoint: Path | None,
    quantize_fn: Callable[..., dict[str, Any]] | None = None,
) -> Cell:
    """Make the cell's file with the pipeline (reusing ``out`` when a previous run left a
    finished export there); on refusal, set ``cell.na``."""
    from edgegate.errors import BadInput
    from edgegate.targets import get_target

    target = get_target(RUNTIMES[cell.runtime])
    seq_len = export_seq_len(target.bounded_by_export, prefill)
    if (out / "manifest.json").is_file():
        cell.notes.append(f"reused {out}")
        cell.verdict = _recorded_verdict(out)
    else:
        started = time.perf_counter()
        try:
            cell.verdict = _build(cell, target.name, out, seq_len, calib_samples, checkpoint,
                                  quantize_fn)  # fmt: skip
        except BadInput as err:  # a cell the pipeline refuses: its row says why
            cell.na = first_line(err)
            return cell
        cell.build_s = round(time.perf_counter() - started, 1)
    path = model_file(out)
    cell.path = os.fspath(path)
    cell.file_mb = round(path.stat().st_size / 2**20, 2)
    return cell


def _recorded_verdict(out: Path) -> str | None:
    """A reused INT8/W4 export's verdict, from the report.json its quantize wrote."""
    report = out / "report.json"
    if not report.is_file():
        return None
    return _verdict(json.loads(report.read_text()))


def _verdict(result: dict[str, Any]) -> str:
    if result.get("passed"):
        return "passed"
    return "failed: " + "; ".join(result.get("failures", []))[:200]


def _build(
    cell: Cell,
    target: str,
    out: Path,
    seq_len: int,
    calib_samples: int,
    checkpoint: Path | None,
    quantize_fn: Callable[..., dict[str, Any]] | None,
) -> str | None:
    if cell.precision == "fp32":
        from edgegate.pipeline.export import export

        export(cell.model, out, target=target, seq_len=seq_len, checkpoint=checkpoint,
               streaming=True)  # fmt: skip
        return None
    if quantize_fn is None:
        from edgegate.pipeline.quantize import quantize as quantize_fn
    scheme = {"scheme": "w4", "group_size": W4_GROUP} if cell.precision == "w4" else {}
    result = quantize_fn(
        cell.model,
        out,
        profile=target,
        streaming=True,
        seq_len=seq_len,
        calib_samples=calib_samples,
        checkpoint=checkpoint,
        **scheme,
    )
    return _verdict(result)


# --- running a streaming step --------------------------------------------------------------


class Step:
    """One streaming file, called as a decode loop calls it: a numpy feed in, numpy out."""

    def __init__(self, runtime: str, path: Path, threads: int) -> None:
        from edgegate.manifest import read_manifest

        manifest = read_manifest(path.parent)
        self.states = [s for s in manifest.inputs if s.name != TOKENS]
        token_spec = next(s for s in manifest.inputs if s.name == TOKENS)
        self.token_dtype = np.dtype(token_spec.dtype)
        self.runtime, self.path, self.threads = runtime, path, threads
        self._call: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None
        self._close: Callable[[], None] = lambda: None

    def __enter__(self) -> Step:
        if self.runtime == "ort":
            sys.path.insert(0, os.fspath(HERE))
            import ort_profile

            session = ort_profile.benchmark_session(os.fspath(self.path), self.threads)
            names = [o.name for o in session.get_outputs()]
            self._call = lambda feed: dict(zip(names, session.run(names, feed), strict=True))
        else:
            from edgegate.runtime import ExecuTorchRunner

            runner = ExecuTorchRunner(self.path, threads=self.threads).__enter__()
            self._call = runner.run
            self._close = lambda: runner.__exit__(None, None, None)
        return self

    def __exit__(self, *exc: object) -> None:
        self._close()

    def zero_states(self) -> dict[str, np.ndarray]:
        """Every state at batch 1, zeros (a stream's start)."""
        return {
            s.name: np.zeros([1 if isinstance(d, str) else d for d in s.shape], s.dtype)
            for s in self.states
        }

    def __call__(self, tokens: np.ndarray, states: dict[str, np.ndarray]):
        """(logits, new states keyed by the state inputs' names)."""
        assert self._call is not None, "Step used outside its with block"
        out = self._call({TOKENS: tokens.astype(self.token_dtype, copy=False), **states})
        return out["logits"], {s.name: out[f"new_{s.name}"] for s in self.states}


def decode_seconds(step: Step, prompt: np.ndarray, steps: int) -> float:
    """Seconds for ``steps`` one-token calls after ``prompt`` (greedy, states fed back)."""
    logits, states = step(prompt[None], step.zero_states())
    token = logits[:, -1:].argmax(-1)
    start = time.perf_counter()
    for _ in range(steps):
        logits, states = step(token, states)
        token = logits[:, -1:].argmax(-1)
    return time.perf_counter() - start


def prefill_seconds(step: Step, text: np.ndarray) -> float:
    """Seconds for one call over ``text`` from zero states."""
    states = step.zero_states()
    start = time.perf_counter()
    step(text[None], states)
    return time.perf_counter() - start


def bench_text(length: int) -> np.ndarray:
    """The first ``length`` bytes of the stdlib test split (real text, as a prompt is)."""
    from edgegate.data.text import stdlib_text

    text = stdlib_text("test")[:length].numpy().astype(np.int64)
    if len(text) < length:
        raise SystemExit(f"the stdlib test split holds {len(text)} bytes, fewer than {length}")
    return text


def time_cells(
    cells: list[Cell], steps: int, prefill: int, prompt: int, threads: int, rounds: int
) -> None:
    """Round-robin: each round runs every cell's decode, then every cell's prefill; each
    cell's median round is kept. A call that fails marks its speed n/a with the reason."""
    live = [c for c in cells if c.na is None and c.path is not None]
    text = bench_text(max(prefill, prompt))
    decode: dict[tuple, list[float]] = {c.key: [] for c in live}
    fill: dict[tuple, list[float]] = {c.key: [] for c in live}
    opened = {c.key: Step(c.runtime, Path(c.path), threads).__enter__() for c in live}
    try:
        for round_ in range(rounds + 1):  # round 0 warms up
            for c in live:
                for times, run in (
                    (decode, lambda s: decode_seconds(s, text[:prompt], steps)),
                    (fill, lambda s: prefill_seconds(s, text[:prefill])),
                ):
                    if times[c.key] is None:
                        continue
                    try:
                        seconds = run(opened[c.key])
                    except Exception as err:  # a runtime refusing a shape: say which and why
                        what = "decode" if times is decode else "prefill"
                        c.notes.append(f"{what} n/a: {first_line(err)}")
                        times[c.key] = None
                        continue
                    if round_:
                        times[c.key].append(seconds)
    finally:
        for step in opened.values():
            step.__exit__(None, None, None)
    for c in live:
        if decode[c.key]:
            c.decode_tok_s = round(steps / statistics.median(decode[c.key]), 1)
        if fill[c.key]:
            c.prefill_tok_s = round(prefill / statistics.median(fill[c.key]), 1)


def add_ratios(cells: list[Cell]) -> None:
    """Each row's speeds over the FP32 row of the same model and runtime."""
    fp32 = {(c.model, c.runtime): c for c in cells if c.precision == "fp32"}
    for c in cells:
        base = fp32.get((c.model, c.runtime))
        if base is None:
            continue
        if c.decode_tok_s and base.decode_tok_s:
            c.decode_vs_fp32 = round(c.decode_tok_s / base.decode_tok_s, 3)
        if c.prefill_tok_s and base.prefill_tok_s:
            c.prefill_vs_fp32 = round(c.prefill_tok_s / base.prefill_tok_s, 3)


# --- peak memory, one child process per row ------------------------------------------------


def read_hwm_mb(status: str | None = None) -> float:
    """This process's resident high-water mark in MB: ``VmHWM`` of /proc/self/status, else
    getrusage's ``ru_maxrss`` (kilobytes on Linux)."""
    if status is None and Path("/proc/self/status").is_file():
        status = Path("/proc/self/status").read_text()
    for line in (status or "").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_memory(
    runtime: str, path: str, text_file: str, steps: int, prefill: int, prompt: int, threads: int
) -> dict[str, float]:
    """In the child: import the runtime, load the file, prefill and decode once; the
    high-water marks before loading and after. The text comes as a .npy file, so that an ONNX
    Runtime child never imports torch (edgegate's text loader does)."""
    if runtime == "ort":
        sys.path.insert(0, os.fspath(HERE))
        import ort_profile  # noqa: F401
    else:
        import torch  # noqa: F401

        from edgegate.runtime import ExecuTorchRunner  # noqa: F401
    text = np.load(text_file)
    before = read_hwm_mb()
    with Step(runtime, Path(path), threads) as step:
        prefill_seconds(step, text[:prefill])
        decode_seconds(step, text[:prompt], steps)
    after = read_hwm_mb()
    return {"baseline_mb": round(before, 1), "peak_rss_mb": round(after, 1)}


def measure_memory(
    cell: Cell, text_file: Path, steps: int, prefill: int, prompt: int, threads: int
) -> None:
    """Run the row in a fresh child process and record its peak RSS."""
    if cell.na is not None or cell.path is None:
        return
    task = [cell.runtime, cell.path, os.fspath(text_file), steps, prefill, prompt, threads]
    command = [sys.executable, os.fspath(Path(__file__).resolve()), "--child-memory",
               json.dumps(task)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        cell.notes.append(f"memory n/a: {reason}")
        return
    record = json.loads(lines[-1])
    cell.peak_rss_mb = record["peak_rss_mb"]
    cell.model_rss_mb = round(record["peak_rss_mb"] - record["baseline_mb"], 1)


# --- report ------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def table(cells: list[Cell]) -> str:
    """The printed table: one row per cell, n/a rows with their reason."""
    head = ("model", "prec", "runtime", "decode tok/s", "x fp32", "prefill tok/s", "x fp32",
            "file MB", "peak RSS MB", "(+model)")  # fmt: skip
    rows = [head]
    for c in cells:
        lead = (c.model, c.precision.upper(), c.runtime)
        if c.na is not None:
            rows.append((*lead, f"n/a: {c.na}"))
            continue
        rows.append((
            *lead,
            _fmt(c.decode_tok_s), _fmt(c.decode_vs_fp32, ".2f"),
            _fmt(c.prefill_tok_s), _fmt(c.prefill_vs_fp32, ".2f"),
            _fmt(c.file_mb, ".2f"), _fmt(c.peak_rss_mb), _fmt(c.model_rss_mb),
        ))  # fmt: skip
    widths = [max(len(r[i]) for r in rows if len(r) > i and len(r) == len(head))
              for i in range(len(head))]  # fmt: skip
    lines = []
    for r in rows:
        if len(r) == len(head):
            lines.append("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
        else:  # an n/a row: the lead columns, then the reason across the rest
            lines.append("  ".join(v.ljust(w) for v, w in zip(r[:3], widths, strict=False))
                         + "  " + r[3])  # fmt: skip
    return "\n".join(lines)


def host_info(threads: int) -> dict[str, Any]:
    import onnxruntime

    info = {
        "machine": platform.machine(),
        "processor": _cpu_name(),
        "cpus": os.cpu_count(),
        "threads": threads,
        "onnxruntime": onnxruntime.__version__,
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        from importlib.metadata import version

        info["executorch"] = version("executorch")
    except Exception:  # not installed: its rows say so
        info["executorch"] = None
    return info


def _cpu_name() -> str:
    path = Path("/proc/cpuinfo")
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


# --- main ----------------------------------------------------------------------------------


def parse_checkpoints(items: list[str]) -> dict[str, Path]:
    found = {}
    for item in items:
        model, eq, path = item.partition("=")
        if not eq or not model or not path:
            raise SystemExit(f"--checkpoint takes MODEL=PATH, got '{item}'")
        found[model] = Path(path)
    return found


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--models", default=None, help="default gla-lm,gla-lm-25m")
    parser.add_argument("--precisions", default=None, help="default fp32,int8,w4")
    parser.add_argument("--runtimes", default="ort,executorch")
    parser.add_argument("--steps", type=int, default=None, help="decode steps (default 128)")
    parser.add_argument("--prefill", type=int, default=None, help="prefill tokens (default 512)")
    parser.add_argument("--prompt", type=int, default=16, help="tokens before the decode steps")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 5)")
    parser.add_argument("--calib-samples", type=int, default=64)
    parser.add_argument("--checkpoint", action="append", default=[], metavar="MODEL=PATH")
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="keep the files here (and reuse them on the next run)",
    )
    parser.add_argument("--json-out", type=Path, default=None)
    parser.add_argument("--no-memory", action="store_true", help="skip the per-row children")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: gla-lm, FP32, 16 steps, 64-token prefill, 2 rounds",
    )
    parser.add_argument("--child-memory", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quick = args.quick
    args.models = (args.models or ("gla-lm" if quick else "gla-lm,gla-lm-25m")).split(",")
    args.precisions = (args.precisions or ("fp32" if quick else ",".join(PRECISIONS))).split(",")
    args.runtimes = args.runtimes.split(",")
    defaults = {"steps": (16, 128), "prefill": (64, 512), "rounds": (2, 5)}
    for name, (smoke, full) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, smoke if quick else full)
    for p in args.precisions:
        if p not in PRECISIONS:
            parser.error(f"unknown precision '{p}' (known: {', '.join(PRECISIONS)})")
    for r in args.runtimes:
        if r not in RUNTIMES:
            parser.error(f"unknown runtime '{r}' (known: {', '.join(RUNTIMES)})")
    for name, value in (("--steps", args.steps), ("--prefill", args.prefill),
                        ("--prompt", args.prompt), ("--threads", args.threads),
                        ("--rounds", args.rounds)):  # fmt: skip
        if value < 1:
            parser.error(f"{name} must be at least 1, got {value}")
    return args


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Build, time and measure every cell; the JSON record."""
    checkpoints = parse_checkpoints(args.checkpoint)
    host = host_info(args.threads)
    started = time.perf_counter()
    cells: list[Cell] = []
    for model in args.models:
        model_cells = []
        for precision in args.precisions:
            for runtime in args.runtimes:
                cell = Cell(model, precision, runtime)
                out = work / f"{model.replace(':', '_')}-{precision}-{runtime}"
                print(f"build {model} {precision} {runtime} ...", file=sys.stderr, flush=True)
                build_cell(cell, out, args.prefill, args.calib_samples, checkpoints.get(model))
                model_cells.append(cell)
        print(f"time {model} ...", file=sys.stderr, flush=True)
        time_cells(model_cells, args.steps, args.prefill, args.prompt, args.threads, args.rounds)
        if not args.no_memory:
            text_file = work / "bench_text.npy"
            np.save(text_file, bench_text(max(args.prefill, args.prompt)))
            for cell in model_cells:
                measure_memory(cell, text_file, args.steps, args.prefill, args.prompt, args.threads)
        cells.extend(model_cells)
    add_ratios(cells)
    host["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    weights = {m: (f"checkpoint {checkpoints[m]}" if m in checkpoints else _weights_of(m))
               for m in args.models}  # fmt: skip
    return {
        "host": host,
        "settings": {
            k: (os.fspath(v) if isinstance(v, Path) else v)
            for k, v in vars(args).items()
            if k != "child_memory"
        },  # fmt: skip
        "weights": weights,
        "seconds": round(time.perf_counter() - started, 1),
        "rows": [asdict(c) for c in cells],
        "table": table(cells),
    }


def _weights_of(model: str) -> str:
    from edgegate.models import shipped_weights

    return "shipped" if shipped_weights(model) is not None else "random init (no shipped weights)"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child_memory is not None:
        print(json.dumps(child_memory(*json.loads(args.child_memory))))
        return
    if args.work_dir is not None:
        args.work_dir.mkdir(parents=True, exist_ok=True)
        record = run(args, args.work_dir)
    else:
        with tempfile.TemporaryDirectory(prefix="bench_decode_") as tmp:
            record = run(args, Path(tmp))
    host = record["host"]
    print(
        f"{host['processor']}, {host['threads']} threads, batch 1; load average "
        f"{host['loadavg_start']} -> {host['loadavg_end']}; weights {record['weights']}"
    )
    print(
        f"decode: {args.steps} one-token steps after a {args.prompt}-token prompt; "
        f"prefill: {args.prefill} tokens in one call; median of {args.rounds} rounds"
    )
    print(record["table"])
    for row in record["rows"]:
        for note in row["notes"]:
            print(f"  {row['model']} {row['precision']} {row['runtime']}: {note}")
        if row["verdict"] and row["verdict"] != "passed":
            print(f"  {row['model']} {row['precision']} {row['runtime']}: {row['verdict']}")
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
