"""ExecuTorch one-token decode: FP32 vs 8da4w (int8 dynamic activations, int4 group weights).

Usage: .venv/bin/python benchmarks/bench_w4_executorch.py [--model gla-lm] [--group-size 32]
       [--steps 300 --warmup 30 --threads 2 --export-len 16 --json]
       e.g. --model gla-lm:dim=512,depth=6 for a model whose weights dominate (random weights)

Both programs are the model's streaming step (tokens and one state per layer in, logits and
the new states out), lowered by edgegate: ``export_pte`` for FP32, ``export_pte_8da4w`` for
the W4 model. The W4 model here is round-to-nearest at ``--group-size`` on every linear whose
input features the group divides, the GLA decay projections kept float (``quantize --scheme
w4`` with AWQ will replace this preparation; the program's form is the same). Prints each
file's size and the tokens per second of a decode loop (one token per step, the state fed
back), timed round-robin in one process so machine noise hits both alike, and the ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from edgegate.exporters.executorch import export_pte
from edgegate.exporters.executorch.w4 import export_pte_8da4w
from edgegate.models import load_model
from edgegate.quant.weight_only import W4Linear
from edgegate.runtime import ExecuTorchRunner

FORMS = ("fp32", "8da4w")


def prepare_w4(model: nn.Module, group_size: int) -> nn.Module:
    """Round-to-nearest W4Linears wherever the group divides the input (decay kept float)."""
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            full = f"{parent_name}.{name}" if parent_name else name
            if (
                isinstance(child, nn.Linear)
                and child.in_features % group_size == 0
                and "gk_proj" not in full
            ):
                setattr(parent, name, W4Linear.from_linear(child, group_size))
    return model


def _export(tmp: Path, spec: str, group_size: int, length: int) -> tuple[dict[str, Path], int]:
    float_lm = load_model(spec).module.eval()
    w4_lm = prepare_w4(load_model(spec).module.eval(), group_size)
    states = float_lm.init_states(1)
    n = len(states)
    names = {
        "input_names": ["tokens", *[f"state{i}" for i in range(n)]],
        "output_names": ["logits", *[f"new_state{i}" for i in range(n)]],
        "dynamic_dims": [(0, 1), *[(0,)] * n],
    }
    args = (torch.randint(0, 256, (1, length)), *states)
    paths = {
        "fp32": export_pte(float_lm.streaming(), args, tmp / "fp32.pte", **names).path,
        "8da4w": export_pte_8da4w(w4_lm.streaming(), args, tmp / "w4.pte", **names).export.path,
    }
    params = sum(p.numel() for p in float_lm.parameters())
    return paths, params


def _decode_loops(paths: dict[str, Path], steps: int, warmup: int, threads: int):
    """Seconds per decode step of each program, round-robin, one token per step."""
    from executorch.runtime import Runtime

    with ExecuTorchRunner(paths["fp32"], threads=threads) as sizing:  # sizes the pool first
        programs = {form: Runtime.get().load_program(path) for form, path in paths.items()}
        methods = {form: program.load_method("forward") for form, program in programs.items()}
        meta = methods["fp32"].metadata
        shapes = [list(meta.input_tensor_meta(i).sizes()) for i in range(1, meta.num_inputs())]
        state = {form: [torch.zeros([1, *s[1:]]) for s in shapes] for form in paths}
        token = {form: torch.zeros(1, 1, dtype=torch.long) for form in paths}
        times: dict[str, list[float]] = {form: [] for form in paths}
        for step in range(warmup + steps):
            for form, method in methods.items():
                start = time.perf_counter()
                out = method.execute((token[form], *state[form]))
                elapsed = time.perf_counter() - start
                token[form] = out[0][:, -1:].argmax(-1)  # greedy: the next token
                state[form] = list(out[1:])
                if step >= warmup:
                    times[form].append(elapsed)
        return times, sizing.threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gla-lm")
    parser.add_argument("--group-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--export-len", type=int, default=16, help="traced (and largest) T")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="edgegate-w4-bench-") as folder:
        paths, params = _export(Path(folder), args.model, args.group_size, args.export_len)
        sizes = {form: path.stat().st_size for form, path in paths.items()}
        times, threads = _decode_loops(paths, args.steps, args.warmup, args.threads)
    median = {form: statistics.median(t) for form, t in times.items()}
    result = {
        "model": args.model,
        "parameters": params,
        "group_size": args.group_size,
        "threads": threads,
        "steps": args.steps,
        "bytes": sizes,
        "size_ratio_8da4w_to_fp32": sizes["8da4w"] / sizes["fp32"],
        "decode_ms_p50": {form: 1e3 * m for form, m in median.items()},
        "tokens_per_s": {form: 1.0 / m for form, m in median.items()},
        "speedup_8da4w_over_fp32": median["fp32"] / median["8da4w"],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{args.model}: {params / 1e6:.2f} M parameters, group {args.group_size}, "
          f"{threads} threads, {args.steps} decode steps")  # fmt: skip
    for form in FORMS:
        print(f"  {form:6s} {sizes[form] / 1e6:8.3f} MB   {1e3 * median[form]:7.3f} ms/token "
              f"({1.0 / median[form]:8.1f} tokens/s)")  # fmt: skip
    print(f"  size 8da4w/fp32: {result['size_ratio_8da4w_to_fp32']:.3f}x   "
          f"decode speed 8da4w vs fp32: {result['speedup_8da4w_over_fp32']:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
