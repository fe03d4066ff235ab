"""The CUDA kernels' step arithmetic, built for the CPU, against the recurrent references.

csrc/tensorrt/cpu/scan_cpu.cpp drives the same ``__host__ __device__`` functions as the kernels
(scan_step.h), column by column and step by step, each column split over the same lanes with
the same padded rows and the same butterfly sum, so what the GPU runs is checked here on any
machine: random shapes, T = 1, odd T, with and without an initial state, in pieces, fp16 inputs,
every keys-per-lane split the kernels are built for, and the launch layout they take.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from edgegate.ops.delta_rule.naive import naive_gated_delta_rule
from edgegate.ops.gla.naive import naive_gated_linear_attention
from edgegate.ops.linear_scan.naive import naive_gated_linear_scan

CSRC = Path(__file__).resolve().parents[2] / "csrc" / "tensorrt"
F32 = ctypes.POINTER(ctypes.c_float)
U16 = ctypes.POINTER(ctypes.c_uint16)


@pytest.fixture(scope="module")
def lib(tmp_path_factory) -> ctypes.CDLL:
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("g++ is not installed: the CPU build of the CUDA step arithmetic needs it")
    out = tmp_path_factory.mktemp("scan_cpu") / "libeg_scan_cpu.so"
    subprocess.run(
        [compiler, "-O2", "-std=c++17", "-shared", "-fPIC", "-Wall", "-Wextra", "-Werror",
         f"-I{CSRC / 'include'}", str(CSRC / "cpu" / "scan_cpu.cpp"), "-o", str(out)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    library = ctypes.CDLL(str(out))
    library.eg_float_to_half.restype = ctypes.c_uint16
    library.eg_half_to_float.restype = ctypes.c_float
    library.eg_float_to_half.argtypes = [ctypes.c_float]
    library.eg_half_to_float.argtypes = [ctypes.c_uint16]
    library.eg_scan_layout.argtypes = [ctypes.c_int] * 6 + [ctypes.POINTER(ctypes.c_int)]
    return library


def _ptr(array: np.ndarray | None):
    if array is None:
        return None
    kind = U16 if array.dtype == np.float16 else F32
    return array.ctypes.data_as(kind)


def _c(array: torch.Tensor, dtype) -> np.ndarray:
    return np.ascontiguousarray(array.numpy().astype(dtype))


KEYS_PER_LANE = (32, 8, 2)  # scan_step.h kKeysPerLaneChoices: the splits the kernels are built for
LAYOUT_FIELDS = ("keys_per_lane", "lanes", "threads", "tile", "slots", "tiles", "blocks", "steps")


def _entry(lib, op: str, dtype, keys_per_lane: int | None):
    """The plain entry point (the split a 16-SM GPU takes) or the one with the split pinned."""
    bits = "f16" if dtype == np.float16 else "f32"
    if keys_per_lane is None:
        return getattr(lib, f"eg_cpu_{op}_{bits}")
    fn = getattr(lib, f"eg_cpu_{op}_lanes_{bits}")
    return lambda *args: fn(keys_per_lane, *args)


def run_gla(lib, q, k, v, g, h0, scale, dtype=np.float32, keys_per_lane=None, expect=0):
    B, T, H, K = q.shape
    V = v.shape[-1]
    arrays = [_c(t, dtype) for t in (q, k, v, g)]
    state0 = _c(h0, np.float32) if h0 is not None else None
    out = np.zeros((B, T, H, V), dtype)
    state = np.zeros((B, H, K, V), np.float32)
    code = _entry(lib, "gla", dtype, keys_per_lane)(
        *map(_ptr, arrays), int(g.dim() == 4), _ptr(state0), _ptr(out), _ptr(state),
        B, T, H, K, V, ctypes.c_float(scale),
    )  # fmt: skip
    assert code == expect
    return out, state


def run_delta(lib, q, k, v, g, beta, h0, scale, dtype=np.float32, keys_per_lane=None, expect=0):
    B, T, H, K = q.shape
    V = v.shape[-1]
    arrays = [_c(t, dtype) for t in (q, k, v, g, beta)]
    state0 = _c(h0, np.float32) if h0 is not None else None
    out = np.zeros((B, T, H, V), dtype)
    state = np.zeros((B, H, K, V), np.float32)
    code = _entry(lib, "delta", dtype, keys_per_lane)(
        *map(_ptr, arrays), _ptr(state0), _ptr(out), _ptr(state), B, T, H, K, V,
        ctypes.c_float(scale),
    )  # fmt: skip
    assert code == expect
    return out, state


def layout(lib, B, H, K, V, sm_count, keys_per_lane=0) -> dict[str, int]:
    values = (ctypes.c_int * 8)()
    assert lib.eg_scan_layout(B, H, K, V, sm_count, keys_per_lane, values) == 0
    return dict(zip(LAYOUT_FIELDS, values, strict=True))


def run_scan(lib, x, g, h0, dtype=np.float32):
    B, T, H, D = x.shape
    arrays = [_c(t, dtype) for t in (x, g)]
    state0 = _c(h0, np.float32) if h0 is not None else None
    out = np.zeros((B, T, H, D), dtype)
    state = np.zeros((B, H, D), np.float32)
    fn = lib.eg_cpu_scan_f16 if dtype == np.float16 else lib.eg_cpu_scan_f32
    assert fn(*map(_ptr, arrays), _ptr(state0), _ptr(out), _ptr(state), B, T, H, D) == 0
    return out, state


def _close(got: np.ndarray, ref: torch.Tensor, rel: float) -> None:
    ref = ref.double().numpy()
    scale = max(1.0, float(np.abs(ref).max())) if ref.size else 1.0
    assert np.abs(got.astype(np.float64) - ref).max(initial=0.0) <= rel * scale


shapes = st.fixed_dictionaries(
    {
        "B": st.integers(1, 2),
        "T": st.sampled_from([1, 2, 3, 5, 7, 9, 16]),
        "H": st.integers(1, 3),
        "K": st.sampled_from([1, 3, 8, 16, 33]),
        "V": st.sampled_from([1, 4, 7, 16]),
        "with_h0": st.booleans(),
        "seed": st.integers(0, 2**16),
    }
)


def _tensors(s: dict):
    gen = torch.Generator().manual_seed(s["seed"])
    B, T, H, K, V = s["B"], s["T"], s["H"], s["K"], s["V"]

    def r(*shape):
        return torch.randn(*shape, generator=gen)

    q, k, v = r(B, T, H, K), torch.nn.functional.normalize(r(B, T, H, K), dim=-1), r(B, T, H, V)
    gate_key = torch.nn.functional.logsigmoid(r(B, T, H, K)) / 4
    gate_head = torch.nn.functional.logsigmoid(r(B, T, H)) / 4
    beta = torch.rand(B, T, H, generator=gen)
    h0 = r(B, H, K, V) if s["with_h0"] else None
    return q, k, v, gate_key, gate_head, beta, h0


@settings(max_examples=30, deadline=None, derandomize=True)
@given(s=shapes, per_key=st.booleans())
def test_gla_step_matches_naive(lib, s, per_key):
    q, k, v, gate_key, gate_head, _, h0 = _tensors(s)
    g = gate_key if per_key else gate_head
    scale = s["K"] ** -0.5
    out, state = run_gla(lib, q, k, v, g, h0, scale)
    ref_out, ref_state = naive_gated_linear_attention(q, k, v, g, h0, scale)
    _close(out, ref_out, 1e-5)
    _close(state, ref_state, 1e-5)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(s=shapes)
def test_delta_step_matches_naive(lib, s):
    q, k, v, _, gate_head, beta, h0 = _tensors(s)
    scale = s["K"] ** -0.5
    out, state = run_delta(lib, q, k, v, gate_head, beta, h0, scale)
    ref_out, ref_state = naive_gated_delta_rule(q, k, v, gate_head, beta, h0, scale)
    _close(out, ref_out, 1e-5)
    _close(state, ref_state, 1e-5)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(s=shapes)
def test_linear_scan_step_matches_naive(lib, s):
    gen = torch.Generator().manual_seed(s["seed"])
    x = torch.randn(s["B"], s["T"], s["H"], s["K"], generator=gen)
    g = torch.nn.functional.logsigmoid(torch.randn(x.shape, generator=gen))
    h0 = torch.randn(s["B"], s["H"], s["K"], generator=gen) if s["with_h0"] else None
    out, state = run_scan(lib, x, g, h0)
    ref_out, ref_state = naive_gated_linear_scan(x, g, h0)
    _close(out, ref_out, 1e-5)
    _close(state, ref_state, 1e-5)


@pytest.mark.parametrize("split", [1, 4, 8])
def test_streaming_in_pieces_equals_one_pass(lib, split):
    """The state handed from one call to the next: bit for bit the same as one pass."""
    s = {"B": 2, "T": 9, "H": 2, "K": 8, "V": 5, "with_h0": True, "seed": 3}
    q, k, v, gate_key, gate_head, beta, h0 = _tensors(s)
    scale = 8**-0.5

    def piece(t, lo, hi):
        return t[:, lo:hi]

    out, state = run_gla(lib, q, k, v, gate_key, h0, scale)
    first, mid = run_gla(lib, *(piece(t, 0, split) for t in (q, k, v, gate_key)), h0, scale)
    second, end = run_gla(
        lib, *(piece(t, split, 9) for t in (q, k, v, gate_key)), torch.from_numpy(mid), scale
    )
    assert np.array_equal(np.concatenate([first, second], 1), out)
    assert np.array_equal(end, state)

    out, state = run_delta(lib, q, k, v, gate_head, beta, h0, scale)
    first, mid = run_delta(
        lib, *(piece(t, 0, split) for t in (q, k, v, gate_head, beta)), h0, scale
    )
    second, end = run_delta(
        lib, *(piece(t, split, 9) for t in (q, k, v, gate_head, beta)), torch.from_numpy(mid), scale
    )
    assert np.array_equal(np.concatenate([first, second], 1), out)
    assert np.array_equal(end, state)


@settings(max_examples=15, deadline=None, derandomize=True)
@given(s=shapes, per_key=st.booleans())
def test_fp16_inputs_with_fp32_state(lib, s, per_key):
    """fp16 in and out, fp32 state: the reference sees the same fp16-rounded inputs."""
    q, k, v, gate_key, gate_head, beta, h0 = _tensors(s)
    g = gate_key if per_key else gate_head
    q, k, v, g, beta = (t.half().float() for t in (q, k, v, g, beta))
    scale = s["K"] ** -0.5
    out, state = run_gla(lib, q, k, v, g, h0, scale, dtype=np.float16)
    assert out.dtype == np.float16 and state.dtype == np.float32
    ref_out, ref_state = naive_gated_linear_attention(q, k, v, g, h0, scale)
    _close(out, ref_out, 1e-3)  # one fp16 rounding of the output
    _close(state, ref_state, 1e-5)
    out, state = run_delta(lib, q, k, v, gate_head.half().float(), beta, h0, scale, np.float16)
    ref_out, ref_state = naive_gated_delta_rule(q, k, v, gate_head.half().float(), beta, h0, scale)
    _close(out, ref_out, 1e-3)
    _close(state, ref_state, 1e-5)


def test_half_conversion_matches_numpy(lib):
    """The kernels' own fp16 conversion: exact both ways on a spread of all 65,536 halves, and
    float -> half rounds like numpy (to nearest even, overflow to infinity, subnormals)."""
    bits = np.arange(65536, dtype=np.uint16)
    values = bits.view(np.float16).astype(np.float32)
    for b, value in zip(bits[::97], values[::97], strict=True):
        back = lib.eg_half_to_float(int(b))
        assert (np.isnan(value) and np.isnan(back)) or back == value
        if not np.isnan(value):
            assert lib.eg_float_to_half(ctypes.c_float(value)) == b
    rng = np.random.default_rng(0)
    magnitudes = rng.choice([1e-7, 1e-5, 1e-3, 1.0, 1e3, 7e4], 2000)
    floats = (rng.standard_normal(2000) * magnitudes).astype(np.float32)
    with np.errstate(over="ignore"):
        expected_bits = floats.astype(np.float16).view(np.uint16)
    for x, expected in zip(floats, expected_bits, strict=True):
        assert lib.eg_float_to_half(ctypes.c_float(x)) == expected, x


def test_key_dims_above_128_are_refused(lib):
    q = torch.zeros(1, 2, 1, 129)
    out = np.zeros((1, 2, 1, 4), np.float32)
    state = np.zeros((1, 1, 129, 4), np.float32)
    code = lib.eg_cpu_gla_f32(
        *(_ptr(_c(t, np.float32)) for t in (q, q, torch.zeros(1, 2, 1, 4), q)), 1, None,
        _ptr(out), _ptr(state), 1, 2, 1, 129, 4, ctypes.c_float(1.0),
    )  # fmt: skip
    assert code != 0


split_shapes = st.fixed_dictionaries(
    {
        "B": st.integers(1, 2),
        "T": st.sampled_from([1, 2, 5, 9]),
        "H": st.integers(1, 2),
        "K": st.sampled_from([1, 2, 7, 24, 33, 64, 65, 128]),
        "V": st.sampled_from([1, 3, 8]),
        "with_h0": st.booleans(),
        "seed": st.integers(0, 2**16),
    }
)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(s=split_shapes, keys_per_lane=st.sampled_from(KEYS_PER_LANE), per_key=st.booleans())
def test_every_lane_split_matches_naive(lib, s, keys_per_lane, per_key):
    """Each built split (keys per lane -> lanes per column, padded rows, butterfly sums) gives the
    reference; a split that needs more than a warp of lanes is refused, not run."""
    q, k, v, gate_key, gate_head, beta, h0 = _tensors(s)
    K = s["K"]
    scale = K**-0.5
    lanes = 1 << max(0, (-(-K // keys_per_lane) - 1).bit_length())
    if lanes > 32:
        run_gla(lib, q, k, v, gate_key, h0, scale, keys_per_lane=keys_per_lane, expect=1)
        run_delta(lib, q, k, v, gate_head, beta, h0, scale, keys_per_lane=keys_per_lane, expect=1)
        return
    g = gate_key if per_key else gate_head
    out, state = run_gla(lib, q, k, v, g, h0, scale, keys_per_lane=keys_per_lane)
    ref_out, ref_state = naive_gated_linear_attention(q, k, v, g, h0, scale)
    _close(out, ref_out, 1e-5)
    _close(state, ref_state, 1e-5)
    out, state = run_delta(lib, q, k, v, gate_head, beta, h0, scale, keys_per_lane=keys_per_lane)
    ref_out, ref_state = naive_gated_delta_rule(q, k, v, gate_head, beta, h0, scale)
    _close(out, ref_out, 1e-5)
    _close(state, ref_state, 1e-5)


def test_lane_splits_only_reorder_the_sums(lib):
    """All splits agree with each other to rounding (a lane bug would not)."""
    s = {"B": 1, "T": 6, "H": 2, "K": 24, "V": 5, "with_h0": True, "seed": 11}
    q, k, v, gate_key, _, _, h0 = _tensors(s)
    outs = [run_gla(lib, q, k, v, gate_key, h0, 0.2, keys_per_lane=e)[0] for e in KEYS_PER_LANE]
    for other in outs[1:]:
        np.testing.assert_allclose(other, outs[0], rtol=0, atol=1e-5)


def test_unbuilt_lane_split_is_refused(lib):
    q = torch.zeros(1, 1, 1, 8)
    out = np.zeros((1, 1, 1, 2), np.float32)
    state = np.zeros((1, 1, 8, 2), np.float32)
    code = lib.eg_cpu_gla_lanes_f32(
        4, *(_ptr(_c(t, np.float32)) for t in (q, q, torch.zeros(1, 1, 1, 2), q)), 1, None,
        _ptr(out), _ptr(state), 1, 1, 1, 8, 2, ctypes.c_float(1.0),
    )  # fmt: skip
    assert code != 0


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    B=st.integers(1, 64), H=st.integers(1, 32), K=st.integers(1, 128), V=st.integers(1, 128),
    sm_count=st.sampled_from([1, 16, 132]), forced=st.sampled_from([0, *KEYS_PER_LANE]),
)  # fmt: skip
def test_launch_layout_covers_the_problem(lib, B, H, K, V, sm_count, forced):
    """The grid the kernels take: 64/128-thread blocks, lanes in a warp, every (b, h, column)
    covered once, staged inputs within 48 KiB of shared memory."""
    lanes_needed = -(-K // forced) if forced else 1
    if forced and lanes_needed > 32:
        return  # no layout with this split: the launcher falls back (tested on the GPU)
    got = layout(lib, B, H, K, V, sm_count, forced)
    E, lanes = got["keys_per_lane"], got["lanes"]
    assert E in KEYS_PER_LANE and (not forced or forced == E)
    assert got["threads"] in (64, 128)
    assert lanes & (lanes - 1) == 0 and lanes <= 32 and lanes * E >= K and lanes * E < 2 * K + E
    assert got["slots"] >= 1 and got["slots"] * got["tile"] * lanes <= got["threads"]
    assert 1 <= got["tile"] <= V and got["tiles"] * got["tile"] >= V
    assert (got["tiles"] - 1) * got["tile"] < V
    assert got["blocks"] * got["slots"] >= B * H * got["tiles"] > (got["blocks"] - 1) * got["slots"]
    floats = got["steps"] * got["slots"] * (3 * lanes * E + got["tile"] + 2)
    assert 1 <= got["steps"] <= 32 and floats * 4 <= 48 * 1024


def test_batch_one_fills_a_16_sm_gpu_where_the_shape_allows(lib):
    """gla-lm (4 heads of 24) at batch 1 took 4 one-warp blocks; now it spreads its columns over
    enough blocks for Orin's 16 SMs. Large batches keep the cheap split (fewest lanes)."""
    small = layout(lib, 1, 4, 24, 24, 16)
    assert small["blocks"] >= 16, small
    big = layout(lib, 16, 8, 128, 128, 132)
    assert big["keys_per_lane"] == 32 and big["blocks"] >= 2 * 132, big
    head = layout(lib, 1, 16, 128, 128, 16)
    assert head["blocks"] >= 32 and head["threads"] == 128, head
