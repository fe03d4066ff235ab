"""The GPU benchmark's host side, here where no GPU is: arguments, the nvcc line, ptxas parsing.

benchmarks/bench_cuda_kernels.py runs on a GPU machine (the kernels against naive.py, then
timings); what can go wrong before the GPU is reached is checked here, including that the exact
nvcc line it builds compiles the kernels for sm_90.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import load_benchmark

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_cuda_kernels")


def test_arguments_defaults_and_refusals(bench):
    args = bench.parse_args([])
    assert args.arch == "native" and args.dtypes == ["fp32", "fp16"] and not args.check_only
    assert bench.parse_args(["--dtypes", "fp16", "--arch", "87"]).dtypes == ["fp16"]
    for bad in (["--dtypes", "bf16"], ["--arch", "sm90"], ["--iters", "0"],
                ["--check-only", "--no-check"], ["--dtypes", ","]):  # fmt: skip
        with pytest.raises(SystemExit) as exc:
            bench.parse_args(bad)
        assert exc.value.code == 2, bad


def test_nvcc_command_targets_one_arch_with_ptxas_report(bench, tmp_path):
    line = bench.nvcc_command("nvcc", "90", tmp_path / "x.so")
    assert "-gencode=arch=compute_90,code=[sm_90,compute_90]" in line
    at = line.index("-Xptxas")
    assert line[at : at + 2] == ["-Xptxas", "-v"]
    assert "-shared" in line and str(bench.SOURCE) in line
    assert line[-2:] == ["-o", str(tmp_path / "x.so")]
    with pytest.raises(ValueError):
        bench.nvcc_command("nvcc", "sm_90", tmp_path / "x.so")


PTXAS = """\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function '_Z3fooPf' for 'sm_87'
ptxas info    : Function properties for _Z3fooPf
    104 bytes stack frame, 176 bytes spill stores, 172 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers, 1024 bytes smem
ptxas info    : Compiling entry function '_Z3fooPf' for 'sm_90'
ptxas info    : Function properties for _Z3fooPf
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 96 registers, used 1 barriers
"""


def test_ptxas_report_is_parsed_per_function_and_arch(bench):
    found = {(u.function, u.arch): u for u in bench.parse_ptxas(PTXAS)}
    assert found[("_Z3fooPf", "sm_87")] == bench.KernelUsage("_Z3fooPf", "sm_87", 255, 176, 172)
    assert found[("_Z3fooPf", "sm_90")] == bench.KernelUsage("_Z3fooPf", "sm_90", 96, 0, 0)


@pytest.mark.slow
def test_exact_nvcc_line_builds_the_entry_points_for_sm90(bench, tmp_path):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not installed: the benchmark's library cannot be built here")
    out = tmp_path / "libeg.so"
    done = subprocess.run(bench.nvcc_command(nvcc, "90", out, threads=2), capture_output=True,
                          text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    usage = bench.parse_ptxas(done.stderr + done.stdout)
    assert usage and all(u.arch == "sm_90" and u.spill_stores == 0 for u in usage)
    symbols = subprocess.run(["nm", "-D", "--defined-only", str(out)], capture_output=True,
                             text=True, check=True).stdout  # fmt: skip
    for name in ("eg_cuda_gla", "eg_cuda_delta", "eg_cuda_scan", "eg_cuda_force_keys_per_lane",
                 "eg_cuda_layout"):  # fmt: skip
        assert f" {name}\n" in symbols, name


def test_without_a_gpu_it_exits_3_with_one_reason(tmp_path):
    script = REPO / "benchmarks" / "bench_cuda_kernels.py"
    done = subprocess.run(
        [sys.executable, str(script), "--check-only"], capture_output=True, text=True, timeout=300
    )
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None and torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present: the benchmark would run for real")
    assert done.returncode == 3, done.stderr
    assert "unavailable" in done.stderr and "Traceback" not in done.stderr
