"""Compressed-weight MIL ops (materialised once, when the program is loaded) and the runtime
quantize / dequantize pair.

iOS16/17 `constexpr_affine_dequantize`: scale * (q - zero_point), scale/zero_point scalar or a
vector along `axis`. iOS18 `constexpr_blockwise_shift_scale`: scale * (data - offset) with
scale/offset of the data's rank, each entry covering a block of data.shape / scale.shape.
`constexpr_lut_to_dense`: iOS16 packed indices into one table, iOS18 per-block tables.
"""

from __future__ import annotations

import numpy as np

from edgegate.runtime.coreml_emulator._program import unpack_bits
from edgegate.runtime.coreml_emulator._registry import Args, fcompute, register


def _along(values: np.ndarray, axis: int, rank: int) -> np.ndarray:
    values = fcompute(values)
    if values.ndim == 0 or values.size == 1:
        return values.reshape(())
    shape = [1] * rank
    shape[axis] = values.size
    return values.reshape(shape)


@register("constexpr_affine_dequantize")
def constexpr_affine_dequantize(a: Args) -> np.ndarray:
    q = np.asarray(a["quantized_data"])
    axis = a.int("axis", 0) % q.ndim
    scale = _along(a["scale"], axis, q.ndim)
    zero = _along(a["zero_point"], axis, q.ndim)
    return scale * (q.astype(np.float32) - zero)


def _blocks(values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Per-block parameters repeated out to the data's shape."""
    values = fcompute(values)
    for axis, (size, n) in enumerate(zip(shape, values.shape, strict=True)):
        if size % n:
            raise ValueError(f"block parameter dim {n} does not divide data dim {size}")
        values = np.repeat(values, size // n, axis=axis)
    return values


@register("constexpr_blockwise_shift_scale")
def constexpr_blockwise_shift_scale(a: Args) -> np.ndarray:
    data = np.asarray(a["data"])
    out = data.astype(np.float32)
    if a.has("offset"):
        out = out - _blocks(a["offset"], data.shape)
    return out * _blocks(a["scale"], data.shape)


@register("constexpr_cast")
def constexpr_cast(a: Args) -> np.ndarray:
    return np.asarray(a["source_val"])


@register("constexpr_lut_to_dense")
def constexpr_lut_to_dense(a: Args) -> np.ndarray:
    lut = np.asarray(a["lut"])
    indices = np.asarray(a["indices"])
    if a.has("shape"):  # iOS16: one table, indices packed into uint8 bytes
        shape = tuple(a.ints("shape"))
        bits = int(np.log2(lut.size))
        count = int(np.prod(shape))
        return lut[unpack_bits(indices.tobytes(), bits, count, signed=False)].reshape(shape)
    if lut.shape[-1] != 1:
        raise a.unsupported("vector palettization (lut with VECTOR_SIZE > 1)")
    rank = indices.ndim
    tables = lut[..., 0]  # [*blocks, NUM]
    block = [indices.shape[i] // tables.shape[i] for i in range(rank)]
    grid = np.indices(indices.shape, sparse=True)
    which = tuple(g // b for g, b in zip(grid, block, strict=True))
    return tables[which + (indices.astype(np.int64),)]


# ---- runtime (activation) quantization, iOS17 ----------------------------------------------

_INT_RANGES = {"int8": (-128, 127), "uint8": (0, 255)}


@register("quantize")
def quantize(a: Args) -> np.ndarray:
    x = fcompute(a["input"])
    dtype = a.str("output_dtype")
    if dtype not in _INT_RANGES:
        raise a.unsupported(f"quantize to '{dtype}'")
    axis = a.int("axis", 0) % max(x.ndim, 1)
    q = np.round(x / _along(a["scale"], axis, x.ndim))
    if a.has("zero_point"):
        q = q + _along(a["zero_point"], axis, x.ndim)
    low, high = _INT_RANGES[dtype]
    return np.clip(q, low, high)


@register("dequantize")
def dequantize(a: Args) -> np.ndarray:
    q = np.asarray(a["input"])
    axis = a.int("axis", 0) % max(q.ndim, 1)
    out = q.astype(np.float32)
    if a.has("zero_point"):
        out = out - _along(a["zero_point"], axis, q.ndim)
    return out * _along(a["scale"], axis, q.ndim)
