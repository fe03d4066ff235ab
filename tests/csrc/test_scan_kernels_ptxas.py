"""No kernel spills registers: every instantiation, compiled for Orin (sm_87) and Hopper (sm_90).

ptxas's ``-v`` report is parsed per function (``bytes spill stores`` / ``spill loads``); a spill
means the state column no longer fits the registers a thread owns (it once did: 255 registers
and 392 bytes of spill stores for the delta rule at K = 128). Registers per kernel are printed
(``pytest -s``) so a CI log shows how close each kernel is to the limit.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import load_benchmark

REPO = Path(__file__).resolve().parents[2]
CSRC = REPO / "csrc" / "tensorrt"
ARCHS = ("87", "90")


def _bench():
    """benchmarks/bench_cuda_kernels.py: the one ptxas parser (and nvcc line) the GPU run uses."""
    return load_benchmark("bench_cuda_kernels")


@pytest.fixture(scope="module")
def usage(tmp_path_factory):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not installed: ptxas cannot report the kernels' registers here")
    out = tmp_path_factory.mktemp("ptxas") / "scan_kernels.o"
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in ARCHS]
    done = subprocess.run(
        [nvcc, "-std=c++17", "-O3", "--threads", "2", *gencode, "-Xptxas", "-v",
         f"-I{CSRC / 'include'}", "-Xcompiler", "-fPIC", "-c",
         str(CSRC / "src" / "scan_kernels.cu"), "-o", str(out)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    bench = _bench()
    found = bench.parse_ptxas(done.stderr + done.stdout)
    names = [bench.short_kernel_name(n) for n in bench.demangle([u.function for u in found])]
    for u, name in sorted(zip(found, names, strict=True), key=lambda p: (p[0].arch, p[1])):
        print(f"{u.arch} {name:48s} {u.registers:4d} registers, spill st/ld "
              f"{u.spill_stores}/{u.spill_loads}")  # fmt: skip
    return found


def test_every_kernel_is_reported_at_both_archs(usage):
    for arch in ARCHS:
        kernels = [u for u in usage if u.arch == f"sm_{arch}"]
        # 3 gate kinds x 2 dtypes x 3 keys-per-lane splits, plus the linear scan in 2 dtypes
        assert len(kernels) >= 20, kernels
        assert all(u.registers > 0 for u in kernels), kernels


def test_no_kernel_spills_at_orin_or_hopper(usage):
    spilling = [u for u in usage if u.spill_stores or u.spill_loads]
    assert not spilling, "\n".join(
        f"{u.arch} {u.function}: {u.spill_stores} B spill stores, {u.spill_loads} B spill loads, "
        f"{u.registers} registers"
        for u in spilling
    )


def test_launch_bounds_keep_registers_within_four_blocks_per_sm(usage):
    """__launch_bounds__(128, 4): at most 128 registers a thread, so 4 blocks share an SM."""
    assert max(u.registers for u in usage) <= 128
