"""The TensorRT plugin's CUDA scan kernels on a real GPU: correct against naive.py, then timed.

    python benchmarks/bench_cuda_kernels.py                 # check + time, about 2-4 minutes
    python benchmarks/bench_cuda_kernels.py --check-only    # correctness only
    python benchmarks/bench_cuda_kernels.py --quick         # one T, fewer variants

What it does, in order (each step prints a line before it starts):
1. compiles csrc/tensorrt/src/scan_kernels.cu to a shared library with nvcc for the local GPU's
   architecture (``-Xptxas -v``: registers and spill bytes per kernel are printed);
2. calls the C entry points ``eg_cuda_gla`` / ``eg_cuda_delta`` / ``eg_cuda_scan`` through ctypes
   on torch.cuda tensors and compares outputs and final states with edgegate/ops/*/naive.py
   (computed in fp64), fp32 and fp16 inputs, every keys-per-lane split the kernels are built for
   (``eg_cuda_force_keys_per_lane``), odd shapes, T = 1, with and without an initial state;
3. times the launches with CUDA events at flash-linear-attention's benchmark shapes
   (fla-org/flash-linear-attention benchmarks/ops/benchmark_gla.py: B=16, H=8, D=128,
   T = 128 * 2^i; here T in 1024, 2048, 4096) plus batch-1 shapes (16 heads of 128, and
   gla-lm's 4 heads of 24), and prints a table: ms per call, ns per time step, GB/s moved.

Exit codes: 0 ok; 1 a check failed; 2 bad arguments; 3 no CUDA GPU, no CUDA torch or no nvcc;
70 the kernels misbehaved (a launch error).
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CSRC = REPO / "csrc" / "tensorrt"
SOURCE = CSRC / "src" / "scan_kernels.cu"
KEYS_PER_LANE = (32, 8, 2)  # scan_step.h kKeysPerLaneChoices
FLA_T = (1024, 2048, 4096)


class Unavailable(RuntimeError):
    """No GPU, no CUDA torch or no nvcc: exit 3."""


class KernelFault(RuntimeError):
    """A launch returned an error: exit 70."""


def say(message: str) -> None:
    print(message, flush=True)


# ---- compile -----------------------------------------------------------------------------


def nvcc_command(nvcc: str, arch: str, out: Path, threads: int = 0) -> list[str]:
    """The nvcc line that builds the kernels (and their eg_cuda_* entry points) as a .so for
    ``arch`` ("90", "87", ...): SASS plus PTX for that arch, ptxas usage report on."""
    if not re.fullmatch(r"\d{2,3}[a-z]?", arch):
        raise ValueError(f"arch {arch!r}: expected a compute capability such as 90 or 87")
    return [
        nvcc, "-std=c++17", "-O3", "-shared", "-Xcompiler", "-fPIC", "--threads", str(threads),
        f"-gencode=arch=compute_{arch},code=[sm_{arch},compute_{arch}]", "-Xptxas", "-v",
        f"-I{CSRC / 'include'}", str(SOURCE), "-o", str(out),
    ]  # fmt: skip


@dataclasses.dataclass(frozen=True)
class KernelUsage:
    """What ptxas reports for one function at one arch."""

    function: str
    arch: str
    registers: int
    spill_stores: int
    spill_loads: int


_COMPILING = re.compile(r"Compiling entry function '([^']+)' for '(sm_\w+)'")
_PROPERTIES = re.compile(r"Function properties for (\S+)")
_SPILLS = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
_REGISTERS = re.compile(r"Used (\d+) registers")


def parse_ptxas(text: str) -> list[KernelUsage]:
    """Per function and arch: registers and spill bytes, from ``-Xptxas -v`` output (entry
    functions and any non-inlined device functions; the arch is the one last compiled for)."""
    found: dict[tuple[str, str], dict[str, int]] = {}
    arch, function = "", ""
    for line in text.splitlines():
        if m := _COMPILING.search(line):
            function, arch = m.group(1), m.group(2)
            found.setdefault((function, arch), {})
        elif m := _PROPERTIES.search(line):
            function = m.group(1)
            found.setdefault((function, arch), {})
        elif (m := _SPILLS.search(line)) and function:
            found[(function, arch)].update(stores=int(m.group(1)), loads=int(m.group(2)))
        elif (m := _REGISTERS.search(line)) and function:
            found[(function, arch)]["registers"] = int(m.group(1))
    return [
        KernelUsage(f, a, v.get("registers", -1), v.get("stores", 0), v.get("loads", 0))
        for (f, a), v in found.items()
    ]


def demangle(names: list[str]) -> list[str]:
    """Readable kernel names (cu++filt or c++filt when installed, else the mangled ones)."""
    tool = shutil.which("cu++filt") or shutil.which("c++filt")
    if tool is None or not names:
        return names
    done = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True)
    lines = done.stdout.splitlines()
    return lines if done.returncode == 0 and len(lines) == len(names) else names


def short_kernel_name(name: str) -> str:
    """``scan_attention_kernel<2, float, 32>`` without namespaces and parameter lists."""
    name = re.sub(r"edgegate::\(anonymous namespace\)::", "", name)
    name = name.replace("unsigned short", "half")
    return name.split("(")[0]


def build(nvcc: str, arch: str, build_dir: Path) -> tuple[Path, list[KernelUsage]]:
    out = build_dir / f"libeg_scan_kernels_sm{arch}.so"
    command = nvcc_command(nvcc, arch, out)
    say(f"[1/3] compiling for sm_{arch}: {' '.join(command)}")
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise KernelFault(f"nvcc failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    usage = parse_ptxas(done.stderr + done.stdout)
    say(f"      built {out.name} in {time.perf_counter() - start:.1f} s; ptxas per kernel:")
    names = demangle([u.function for u in usage])
    for u, name in sorted(zip(usage, names, strict=True), key=lambda p: short_kernel_name(p[1])):
        spill = "" if u.spill_stores == u.spill_loads == 0 else "   <-- SPILLS"
        say(f"      {u.arch} {short_kernel_name(name):48s} {u.registers:4d} regs  "
            f"spill st/ld {u.spill_stores}/{u.spill_loads}{spill}")  # fmt: skip
    return out, usage


# ---- the library -------------------------------------------------------------------------


def load_library(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    ptr, i32, f32 = ctypes.c_void_p, ctypes.c_int, ctypes.c_float
    lib.eg_cuda_gla.argtypes = [i32, ptr, ptr, ptr, ptr, i32, ptr, ptr, ptr, *[i32] * 5, f32, ptr]
    lib.eg_cuda_delta.argtypes = [i32, *[ptr] * 8, *[i32] * 5, f32, ptr]
    lib.eg_cuda_scan.argtypes = [i32, *[ptr] * 5, *[i32] * 4, ptr]
    lib.eg_cuda_force_keys_per_lane.argtypes = [i32]
    lib.eg_cuda_layout.argtypes = [i32, i32, i32, i32, ctypes.POINTER(i32)]
    return lib


def layout_of(lib: ctypes.CDLL, B: int, H: int, K: int, V: int) -> str:
    values = (ctypes.c_int * 8)()
    lib.eg_cuda_layout(B, H, K, V, values)
    e, lanes, threads, tile, slots, tiles, blocks, steps = values
    return f"E{e}xL{lanes} {blocks}x{threads}thr tile{tile} slots{slots} chunk{steps}"


def force(lib: ctypes.CDLL, keys_per_lane: int) -> None:
    if lib.eg_cuda_force_keys_per_lane(keys_per_lane) != 0:
        raise KernelFault(f"eg_cuda_force_keys_per_lane({keys_per_lane}) refused")


def _p(t) -> int | None:
    return None if t is None else t.data_ptr()


def _check(code: int, what: str) -> None:
    if code != 0:
        raise KernelFault(f"{what}: cudaError {code}")


def run_gla(lib, torch, q, k, v, g, h0, scale):
    B, T, H, K = q.shape
    V = v.shape[-1]
    out = torch.empty(B, T, H, V, dtype=q.dtype, device=q.device)
    state = torch.empty(B, H, K, V, dtype=torch.float32, device=q.device)
    code = lib.eg_cuda_gla(
        int(q.dtype == torch.float16), _p(q), _p(k), _p(v), _p(g), int(g.dim() == 4), _p(h0),
        _p(out), _p(state), B, T, H, K, V, scale, torch.cuda.current_stream().cuda_stream,
    )  # fmt: skip
    _check(code, f"eg_cuda_gla B={B} T={T} H={H} K={K} V={V}")
    return out, state


def run_delta(lib, torch, q, k, v, g, beta, h0, scale):
    B, T, H, K = q.shape
    V = v.shape[-1]
    out = torch.empty(B, T, H, V, dtype=q.dtype, device=q.device)
    state = torch.empty(B, H, K, V, dtype=torch.float32, device=q.device)
    code = lib.eg_cuda_delta(
        int(q.dtype == torch.float16), _p(q), _p(k), _p(v), _p(g), _p(beta), _p(h0), _p(out),
        _p(state), B, T, H, K, V, scale, torch.cuda.current_stream().cuda_stream,
    )  # fmt: skip
    _check(code, f"eg_cuda_delta B={B} T={T} H={H} K={K} V={V}")
    return out, state


def run_scan(lib, torch, x, g, h0):
    B, T, H, D = x.shape
    out = torch.empty_like(x)
    state = torch.empty(B, H, D, dtype=torch.float32, device=x.device)
    code = lib.eg_cuda_scan(
        int(x.dtype == torch.float16), _p(x), _p(g), _p(h0), _p(out), _p(state), B, T, H, D,
        torch.cuda.current_stream().cuda_stream,
    )  # fmt: skip
    _check(code, f"eg_cuda_scan B={B} T={T} H={H} D={D}")
    return out, state


# ---- inputs ------------------------------------------------------------------------------


def make_inputs(torch, B, T, H, K, V, dtype, seed, with_h0=True):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    F = torch.nn.functional

    def r(*shape):
        return torch.randn(*shape, generator=gen, device="cuda")

    inputs = {
        "q": r(B, T, H, K),
        "k": F.normalize(r(B, T, H, K), dim=-1),
        "v": r(B, T, H, V),
        "g_key": F.logsigmoid(r(B, T, H, K)).clamp_min(-5) / 4,
        "g_head": F.logsigmoid(r(B, T, H)) / 4,
        "beta": torch.rand(B, T, H, generator=gen, device="cuda"),
        "x": r(B, T, H, V),
        "g_scan": F.logsigmoid(r(B, T, H, V)),
    }
    inputs = {name: t.to(dtype).contiguous() for name, t in inputs.items()}
    inputs["h0"] = r(B, H, K, V) if with_h0 else None
    inputs["h0_scan"] = r(B, H, V) if with_h0 else None
    return inputs


# ---- correctness ---------------------------------------------------------------------------

CHECK_SHAPES = (  # B, T, H, K, V: odd sizes, T = 1, padded keys, partial tiles, full heads
    (1, 1, 1, 1, 1),
    (2, 37, 3, 24, 24),
    (3, 17, 2, 33, 7),
    (1, 64, 4, 128, 128),
    (2, 129, 2, 64, 96),
    (1, 50, 16, 128, 64),
)
TOLERANCE = {"fp32": 2e-5, "fp16": 2e-3}  # max abs error / max(1, max |reference|)


def rel_error(torch, got, ref) -> float:
    ref = ref.double()
    scale = max(1.0, float(ref.abs().max())) if ref.numel() else 1.0
    return float((got.double() - ref).abs().max()) / scale if ref.numel() else 0.0


def check(lib, torch, naive, dtypes: list[str]) -> list[str]:
    """Every op, split, dtype and shape against naive.py in fp64; returns the failures."""
    failures = []
    say("[2/3] correctness against edgegate/ops/*/naive.py (fp64), max error / max(1, |ref|):")
    say(f"      {'op':10s} {'dtype':5s} {'split':6s} {'B,T,H,K,V':18s} {'out err':>9s} "
        f"{'state err':>9s}  layout")  # fmt: skip
    for dtype_name in dtypes:
        dtype = {"fp32": torch.float32, "fp16": torch.float16}[dtype_name]
        for shape in CHECK_SHAPES:
            B, T, H, K, V = shape
            for seed, with_h0 in ((0, True), (1, False)):
                x = make_inputs(torch, B, T, H, K, V, dtype, seed, with_h0)
                d = {n: (t.double() if t is not None else None) for n, t in x.items()}
                scale = K**-0.5
                refs = {
                    "gla/key": naive.gla(d["q"], d["k"], d["v"], d["g_key"], d["h0"], scale),
                    "gla/head": naive.gla(d["q"], d["k"], d["v"], d["g_head"], d["h0"], scale),
                    "delta": naive.delta(
                        d["q"], d["k"], d["v"], d["g_head"], d["beta"], d["h0"], scale
                    ),
                    "scan": naive.scan(d["x"], d["g_scan"], d["h0_scan"]),
                }
                for split in ("auto", *map(str, KEYS_PER_LANE)):
                    e = 0 if split == "auto" else int(split)
                    if e and -(-K // e) > 32:
                        continue  # more than a warp of lanes: no kernel for this split
                    force(lib, e)
                    got = {
                        "gla/key": run_gla(lib, torch, x["q"], x["k"], x["v"], x["g_key"],
                                           x["h0"], scale),
                        "gla/head": run_gla(lib, torch, x["q"], x["k"], x["v"], x["g_head"],
                                            x["h0"], scale),
                        "delta": run_delta(lib, torch, x["q"], x["k"], x["v"], x["g_head"],
                                           x["beta"], x["h0"], scale),
                    }  # fmt: skip
                    if split == "auto":
                        got["scan"] = run_scan(lib, torch, x["x"], x["g_scan"], x["h0_scan"])
                    torch.cuda.synchronize()
                    where = layout_of(lib, B, H, K, V)
                    for op, (out, state) in got.items():
                        ref_out, ref_state = refs[op]
                        eo, es = rel_error(torch, out, ref_out), rel_error(torch, state, ref_state)
                        bad = eo > TOLERANCE[dtype_name] or es > TOLERANCE["fp32"] * 10
                        shown = "" if op == "scan" else where
                        line = (f"{op:10s} {dtype_name:5s} {split:6s} {str(shape):18s} "
                                f"{eo:9.2e} {es:9.2e}  {shown}")  # fmt: skip
                        if bad:
                            failures.append(line + (" h0" if with_h0 else ""))
                        if bad or (seed == 0 and split in ("auto", "2")):
                            say(f"      {line}{'   <-- FAIL' if bad else ''}")
    force(lib, 0)
    return failures


# ---- timing --------------------------------------------------------------------------------


def time_call(torch, fn, warmup: int, iters: int) -> float:
    """Mean milliseconds per call over ``iters`` back-to-back calls, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / iters


def bench_shapes(quick: bool) -> list[tuple[str, tuple[int, int, int, int, int]]]:
    fla = [("fla", (16, t, 8, 128, 128)) for t in ((2048,) if quick else FLA_T)]
    return [*fla, ("batch1", (1, 2048, 16, 128, 128)), ("gla-lm b1", (1, 2048, 4, 24, 24))]


def timed_ops(lib, torch, x, B, T, H, K, V, size) -> dict[str, tuple[Callable[[], object], int]]:
    """Each attention op as a no-argument call, with the bytes it reads and writes (inputs and
    outputs; the fp32 state is counted by the caller)."""
    q, k, v, scale = x["q"], x["k"], x["v"], K**-0.5
    per_step = B * T * H * size
    return {
        "gla/key": (functools.partial(run_gla, lib, torch, q, k, v, x["g_key"], x["h0"], scale),
                    per_step * (3 * K + 2 * V)),
        "gla/head": (functools.partial(run_gla, lib, torch, q, k, v, x["g_head"], x["h0"], scale),
                     per_step * (2 * K + 2 * V + 1)),
        "delta": (functools.partial(run_delta, lib, torch, q, k, v, x["g_head"], x["beta"],
                                    x["h0"], scale),
                  per_step * (2 * K + 2 * V + 2)),
    }  # fmt: skip


def bench(lib, torch, dtypes: list[str], quick: bool, warmup: int, iters: int) -> None:
    say(f"[3/3] timing with CUDA events ({warmup} warm-up + {iters} timed calls each):")
    say(f"      {'shape':10s} {'B,T,H,K,V':24s} {'op':9s} {'dtype':5s} {'split':5s} "
        f"{'ms':>9s} {'ns/step':>9s} {'GB/s':>7s}  layout")  # fmt: skip
    splits = ("auto",) if quick else ("auto", *map(str, KEYS_PER_LANE))
    for label, (B, T, H, K, V) in bench_shapes(quick):
        for dtype_name in dtypes:
            dtype = {"fp32": torch.float32, "fp16": torch.float16}[dtype_name]
            x = make_inputs(torch, B, T, H, K, V, dtype, seed=0)
            size = 2 if dtype_name == "fp16" else 4
            state_bytes = 2 * B * H * K * V * 4  # h0 in, state out
            ops = timed_ops(lib, torch, x, B, T, H, K, V, size)
            for op, (fn, moved) in ops.items():
                for split in splits:
                    e = 0 if split == "auto" else int(split)
                    if e and -(-K // e) > 32:
                        continue
                    force(lib, e)
                    ms = time_call(torch, fn, warmup, iters)
                    gbs = (moved + state_bytes) / ms / 1e6
                    say(f"      {label:10s} {str((B, T, H, K, V)):24s} {op:9s} {dtype_name:5s} "
                        f"{split:5s} {ms:9.3f} {ms * 1e6 / T:9.1f} {gbs:7.1f}  "
                        f"{layout_of(lib, B, H, K, V)}")  # fmt: skip
            force(lib, 0)
            scan = functools.partial(run_scan, lib, torch, x["x"], x["g_scan"], x["h0_scan"])
            ms = time_call(torch, scan, warmup, iters)
            gbs = (3 * B * T * H * V * size + 2 * B * H * V * 4) / ms / 1e6
            say(f"      {label:10s} {str((B, T, H, V, '-')):24s} {'scan':9s} {dtype_name:5s} "
                f"{'-':5s} {ms:9.3f} {ms * 1e6 / T:9.1f} {gbs:7.1f}")  # fmt: skip
            del x
            torch.cuda.empty_cache()


# ---- main ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--arch", default="native", help="capability to build for, e.g. 90; native = the GPU's"
    )
    parser.add_argument("--nvcc", default=None, help="nvcc to use (default: PATH, CUDA_HOME)")
    parser.add_argument("--build-dir", type=Path, default=None, help="where the .so goes")
    parser.add_argument("--dtypes", default="fp32,fp16", help="comma list of fp32, fp16")
    parser.add_argument("--check-only", action="store_true", help="skip the timings")
    parser.add_argument("--no-check", action="store_true", help="skip the correctness checks")
    parser.add_argument("--quick", action="store_true", help="one fla T, automatic split only")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=10)
    args = parser.parse_args(argv)
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    if not dtypes or any(d not in TOLERANCE for d in dtypes):
        parser.error(f"--dtypes {args.dtypes!r}: expected a comma list of fp32, fp16")
    if args.arch != "native" and not re.fullmatch(r"\d{2,3}[a-z]?", args.arch):
        parser.error(f"--arch {args.arch!r}: expected 'native' or a capability such as 90")
    if args.warmup < 0 or args.iters < 1:
        parser.error("--warmup must be >= 0 and --iters >= 1")
    if args.check_only and args.no_check:
        parser.error("--check-only and --no-check leave nothing to do")
    args.dtypes = dtypes
    return args


def find_nvcc(explicit: str | None) -> str:
    candidates = [explicit] if explicit else [
        shutil.which("nvcc"),
        *(str(Path(os.environ[v]) / "bin" / "nvcc") for v in ("CUDA_HOME", "CUDA_PATH")
          if v in os.environ),
        "/usr/local/cuda/bin/nvcc",
    ]  # fmt: skip
    for c in candidates:
        if c and Path(c).is_file():
            return c
    raise Unavailable("nvcc not found (PATH, $CUDA_HOME/bin, /usr/local/cuda/bin); pass --nvcc")


def load_naive():
    sys.path.insert(0, str(REPO))
    from edgegate.ops.delta_rule.naive import naive_gated_delta_rule
    from edgegate.ops.gla.naive import naive_gated_linear_attention
    from edgegate.ops.linear_scan.naive import naive_gated_linear_scan

    return argparse.Namespace(
        gla=naive_gated_linear_attention, delta=naive_gated_delta_rule,
        scan=naive_gated_linear_scan,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import torch
    except ImportError as exc:
        raise Unavailable(f"torch is not installed: {exc}") from exc
    if not torch.cuda.is_available():
        raise Unavailable(f"torch {torch.__version__} sees no CUDA GPU (torch.version.cuda="
                          f"{torch.version.cuda})")  # fmt: skip
    major, minor = torch.cuda.get_device_capability()
    arch = f"{major}{minor}" if args.arch == "native" else args.arch
    nvcc = find_nvcc(args.nvcc)
    version = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    say(f"GPU: {torch.cuda.get_device_name()} (sm_{major}{minor}, "
        f"{torch.cuda.get_device_properties(0).multi_processor_count} SMs); torch "
        f"{torch.__version__} (CUDA {torch.version.cuda}); nvcc: "
        f"{version.strip().splitlines()[-1] if version else '?'}")  # fmt: skip
    build_dir = args.build_dir or Path(tempfile.mkdtemp(prefix="eg_cuda_"))
    build_dir.mkdir(parents=True, exist_ok=True)
    library, usage = build(nvcc, arch, build_dir)
    lib = load_library(library)
    spills = [u for u in usage if u.spill_stores or u.spill_loads]
    failures = []
    if not args.no_check:
        failures = check(lib, torch, load_naive(), args.dtypes)
        say(f"      {'all checks passed' if not failures else f'{len(failures)} FAILED:'}")
        for line in failures:
            say(f"      FAIL {line}")
    if not args.check_only:
        bench(lib, torch, args.dtypes, args.quick, args.warmup, args.iters)
    if spills:
        say(f"SPILLS in {len(spills)} kernels (see the ptxas table above)")
    return 1 if failures or spills else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Unavailable as exc:
        print(f"bench_cuda_kernels: unavailable: {exc}", file=sys.stderr)
        sys.exit(3)
    except KernelFault as exc:
        print(f"bench_cuda_kernels: kernel fault: {exc}", file=sys.stderr)
        sys.exit(70)
