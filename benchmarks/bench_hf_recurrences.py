"""Per-token latency of a transformers gated LM: edgegate's recognised export (one scan op per
recurrent block) against the export of transformers' own traced code, measured in one run.

Usage: .venv/bin/python benchmarks/bench_hf_recurrences.py [--model qwen3_next|FOLDER]
       [--seq-len 512] [--threads 2] [--runs 20] [--no-executorch] [--json-out FILE]

Rows, each at batch 1 and ``--seq-len`` tokens (one prefill pass; per-token = pass / tokens):
- ORT, recognised: the `onnxruntime` target's graph (the scans lowered to
  com.microsoft.LinearAttention), traced with batch and length dynamic;
- ORT, traced code: the same model exported with its recurrences left as transformers wrote
  them (the Python chunk loop unrolled), at the static length it pins;
- ExecuTorch, recognised / traced code: the same two through XNNPACK (static shapes here: the
  traced loop cannot be exported otherwise).
Also prints each graph's node count and export time, and the ratios traced / recognised. An
ExecuTorch row's nodes are its program's XNNPACK delegate calls plus the ops left to the
portable kernels (the JSON has the two apart).
The default model is the tiny Qwen3-Next of the tests (tests/hf/tiny.py), random weights:
latency does not depend on the weights.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgegate.exporters.onnx.export import export_onnx  # noqa: E402
from edgegate.models import load_model  # noqa: E402
from edgegate.pipeline.recurrences import prepare_recurrences  # noqa: E402


def _model(spec: str, folder: Path) -> str:
    if Path(spec).is_dir():
        return f"hf:{spec}"
    from tests.hf.tiny import save_tiny

    return f"hf:{save_tiny(spec, folder / spec)}"


def _time(run, runs: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _ort_row(module, tokens, path: Path, lower: str | None, dynamic: bool, args) -> dict:
    started = time.perf_counter()
    shapes = ({0: torch.export.Dim.AUTO, 1: torch.export.Dim.AUTO},) if dynamic else None
    export_onnx(
        module,
        (tokens,),
        path,
        lower=lower,
        input_names=["tokens"],
        output_names=["logits"],
        dynamic_shapes=shapes,
    )
    seconds = time.perf_counter() - started
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {"tokens": tokens[:1].numpy()}
    median = _time(lambda: session.run(None, feed), args.runs)
    nodes = len(onnx.load(path).graph.node)
    return {"export_s": round(seconds, 1), "nodes": nodes, "pass_ms": median * 1e3}


def _et_row(module, tokens, path: Path, args) -> dict:
    """Export at batch 1, static, and time the program through edgegate's runner: it loads
    the .pte from its path and holds the Program for as long as the method runs, and sizes
    XNNPACK's pool to ``--threads``. (``Runtime.load_program(path.read_bytes())
    .load_method(...)`` does neither: the method reads the program's bytes, which die with
    the temporary Program, and fails with garbage shapes, "Attempted to resize a static
    tensor ... (64, 0, 386356576)".)"""
    from edgegate.exporters.executorch.export import export_pte
    from edgegate.runtime import ExecuTorchRunner

    started = time.perf_counter()
    done = export_pte(
        module, (tokens[:1],), path, input_names=["tokens"], output_names=["logits"],
        dynamic_dims=[()],
    )  # fmt: skip
    seconds = time.perf_counter() - started
    feed = {"tokens": tokens[:1].numpy()}
    with ExecuTorchRunner(path, threads=args.threads) as runner:
        median = _time(lambda: runner.run(feed), args.runs)
    portable = sum(done.portable_ops.values())
    return {
        "export_s": round(seconds, 1),
        "nodes": done.delegated_nodes + portable,
        "delegates": done.delegated_nodes,
        "portable_ops": portable,
        "pass_ms": median * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen3_next")
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--no-executorch", action="store_true")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench-hf-"))
    traced = load_model(_model(args.model, work)).module.eval()
    recognised = copy.deepcopy(traced)
    tokens = torch.randint(0, 256, (2, args.seq_len), generator=torch.Generator().manual_seed(0))
    report = prepare_recurrences(recognised, (tokens[:, :64],))
    print(f"recognised: {[s.path + ' -> ' + s.op for s in report.swapped]}")
    rows: dict[str, dict] = {}
    todo = {
        "ORT recognised": lambda: _ort_row(
            recognised, tokens, work / "rec.onnx", "onnxruntime", True, args
        ),
        "ORT traced code": lambda: _ort_row(
            traced, tokens[:1], work / "tr.onnx", None, False, args
        ),
    }
    if not args.no_executorch:
        todo["ExecuTorch recognised"] = lambda: _et_row(recognised, tokens, work / "rec.pte", args)
        todo["ExecuTorch traced code"] = lambda: _et_row(traced, tokens, work / "tr.pte", args)
    with torch.no_grad():
        for name, row in todo.items():
            rows[name] = row()
            print(f"{name}: {rows[name]}", flush=True)  # a long export shows its progress
    print(f"\nbatch 1, T={args.seq_len}, {args.threads} threads, median of {args.runs}")
    print(f"{'row':26} {'export s':>9} {'nodes':>6} {'pass ms':>9} {'per token us':>13}")
    for name, row in rows.items():
        row["per_token_us"] = row["pass_ms"] * 1e3 / args.seq_len
        nodes = "-" if row["nodes"] is None else str(row["nodes"])
        print(
            f"{name:26} {row['export_s']:>9} {nodes:>6} {row['pass_ms']:>9.2f} "
            f"{row['per_token_us']:>13.1f}"
        )
    for runtime in ("ORT", "ExecuTorch"):
        pair = rows.get(f"{runtime} traced code"), rows.get(f"{runtime} recognised")
        if all(pair):
            ratio = pair[0]["pass_ms"] / pair[1]["pass_ms"]
            print(f"{runtime}: traced code / recognised = {ratio:.2f}x")
    if args.json_out:
        args.json_out.write_text(json.dumps({"seq_len": args.seq_len, "rows": rows}, indent=2))


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
