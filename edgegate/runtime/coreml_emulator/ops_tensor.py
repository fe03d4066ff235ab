"""MIL ops that move, index and build tensors, computed on runtime values.

Flexible shapes reach these ops as runtime data (`shape` -> `gather` -> `concat` -> `reshape`),
so nothing here trusts the shapes the converter inferred: every op reads its real inputs.
"""

from __future__ import annotations

import numpy as np

from edgegate.runtime.coreml_emulator._registry import Args, axis_of, compute, fcompute, register


@register("const")
def const(a: Args) -> np.ndarray:
    return a["val"]


@register("identity")
def identity(a: Args) -> np.ndarray:
    return a["x"]


@register("shape")
def shape(a: Args) -> np.ndarray:
    return np.array(np.shape(a["x"]), dtype=np.int32)


@register("reshape")
def reshape(a: Args) -> np.ndarray:
    x = np.asarray(a["x"])
    target = [int(v) for v in np.asarray(a["shape"]).reshape(-1)]
    if len(target) == x.ndim:  # 0 keeps the input's dimension
        target = [x.shape[i] if v == 0 else v for i, v in enumerate(target)]
    return x.reshape(target)


@register("transpose")
def transpose(a: Args) -> np.ndarray:
    return np.transpose(a["x"], a.ints("perm"))


@register("expand_dims")
def expand_dims(a: Args) -> np.ndarray:
    x = np.asarray(a["x"])
    rank = x.ndim + len(a.ints("axes"))
    return np.expand_dims(x, tuple(sorted(axis_of(v, rank) for v in a.ints("axes"))))


@register("squeeze")
def squeeze(a: Args) -> np.ndarray:
    x = np.asarray(a["x"])
    axes = a.ints("axes")
    if axes is None:
        return np.squeeze(x)
    return np.squeeze(x, tuple(axis_of(v, x.ndim) for v in axes))


@register("flatten2d")
def flatten2d(a: Args) -> np.ndarray:
    x = np.asarray(a["x"])
    axis = axis_of(a.int("axis", 1), x.ndim)
    return x.reshape(int(np.prod(x.shape[:axis])), -1)


@register("concat")
def concat(a: Args) -> np.ndarray:
    values = [compute(v) for v in a.list("values")]
    if any(np.issubdtype(v.dtype, np.floating) for v in values):
        values = [fcompute(v) for v in values]
    values = [np.atleast_1d(v) for v in values]
    axis = axis_of(a.int("axis"), values[0].ndim)
    if not a.bool("interleave"):
        return np.concatenate(values, axis=axis)
    stacked = np.stack(values, axis=axis + 1)
    shape = list(values[0].shape)
    shape[axis] *= len(values)
    return stacked.reshape(shape)


@register("stack")
def stack(a: Args) -> np.ndarray:
    values = [compute(v) for v in a.list("values")]
    rank = values[0].ndim + 1
    return np.stack(values, axis=axis_of(a.int("axis"), rank))


@register("split")
def split(a: Args) -> tuple[np.ndarray, ...]:
    x = np.asarray(a["x"])
    axis = axis_of(a.int("axis"), x.ndim)
    sizes = a.ints("split_sizes")
    if sizes is None:
        parts = a.int("num_splits", len(a.out_dtypes))
        if x.shape[axis] % parts:
            raise ValueError(f"split: axis size {x.shape[axis]} not divisible by {parts}")
        sizes = [x.shape[axis] // parts] * parts
    return tuple(np.split(x, np.cumsum(sizes)[:-1], axis=axis))


@register("tile")
def tile(a: Args) -> np.ndarray:
    return np.tile(a["x"], a.ints("reps"))


@register("fill")
def fill(a: Args) -> np.ndarray:
    return np.full(a.ints("shape"), a.get("value", 0.0))


@register("fill_like")
def fill_like(a: Args) -> np.ndarray:
    return np.full(np.shape(a["ref_tensor"]), a.get("value", 0.0))


@register("range_1d")
def range_1d(a: Args) -> np.ndarray:
    start, end, step = (compute(a[k]) for k in ("start", "end", "step"))
    return np.arange(start, end, step)


@register("slice_by_index")
def slice_by_index(a: Args) -> np.ndarray:
    x = np.asarray(a["x"])
    rank = x.ndim
    begin, end = a.ints("begin"), a.ints("end")
    stride = a.ints("stride") or [1] * rank
    begin_mask = a.ints("begin_mask") or [0] * rank
    end_mask = a.ints("end_mask") or [0] * rank
    squeeze_mask = a.ints("squeeze_mask") or [0] * rank
    index: list[int | slice] = []
    for i in range(rank):
        if squeeze_mask[i]:
            index.append(begin[i])
        else:
            index.append(
                slice(
                    None if begin_mask[i] else begin[i], None if end_mask[i] else end[i], stride[i]
                )
            )
    return x[tuple(index)]


@register("slice_by_size")
def slice_by_size(a: Args) -> np.ndarray:
    x = np.asarray(a["x"])
    begin, size = a.ints("begin"), a.ints("size")
    index = []
    for i, (b, s) in enumerate(zip(begin, size, strict=True)):
        b = axis_of(b, x.shape[i])
        index.append(slice(b, x.shape[i] if s == -1 else b + s))
    return x[tuple(index)]


def _gather(x: np.ndarray, indices: np.ndarray, axis: int, batch_dims: int) -> np.ndarray:
    indices = indices.astype(np.int64)
    if batch_dims == 0:
        return np.take(x, indices, axis=axis)
    batch = x.shape[:batch_dims]
    xb = x.reshape((-1,) + x.shape[batch_dims:])
    ib = indices.reshape((-1,) + indices.shape[batch_dims:])
    parts = [np.take(xb[i], ib[i], axis=axis - batch_dims) for i in range(xb.shape[0])]
    out = np.stack(parts) if parts else np.zeros((0,), x.dtype)
    return out.reshape(batch + out.shape[1:])


@register("gather")
def gather(a: Args) -> np.ndarray:
    x = np.asarray(a["x"])
    axis = axis_of(a.int("axis", 0), x.ndim)
    batch_dims = a.int("batch_dims", 0)
    return _gather(x, np.asarray(a["indices"]), axis, batch_dims)


@register("gather_along_axis")
def gather_along_axis(a: Args) -> np.ndarray:
    x = np.asarray(a["x"])
    indices = np.asarray(a["indices"]).astype(np.int64)
    axis = axis_of(a.int("axis", 0), x.ndim)
    indices = np.where(indices < 0, indices + x.shape[axis], indices)
    return np.take_along_axis(x, indices, axis=axis)


@register("gather_nd")
def gather_nd(a: Args) -> np.ndarray:
    x = np.asarray(a["x"])
    indices = np.asarray(a["indices"]).astype(np.int64)
    batch_dims = a.int("batch_dims", 0)
    batch = x.shape[:batch_dims]
    xb = x.reshape((-1,) + x.shape[batch_dims:])
    ib = indices.reshape((-1,) + indices.shape[batch_dims:])
    parts = []
    for i in range(xb.shape[0]):
        idx = ib[i]
        parts.append(xb[i][tuple(np.moveaxis(idx, -1, 0))])
    out = np.stack(parts)
    return out.reshape(batch + out.shape[1:])


_SCATTER = {
    "update": None,
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "div": np.divide,
    "max": np.maximum,
    "min": np.minimum,
}


def _scatter_mode(a: Args):
    mode = a.str("mode", "add")
    if mode not in _SCATTER:
        raise a.unsupported(f"scatter mode '{mode}'")
    return _SCATTER[mode]


def _scatter_into(out: np.ndarray, index: tuple, updates: np.ndarray, ufunc) -> None:
    if ufunc is None:
        out[index] = updates
    else:
        ufunc.at(out, index, updates)


@register("scatter")
def scatter(a: Args) -> np.ndarray:
    out = compute(a["data"]).copy()
    axis = axis_of(a.int("axis", 0), out.ndim)
    indices = np.asarray(a["indices"]).astype(np.int64).reshape(-1)
    updates = np.moveaxis(compute(a["updates"]), axis, 0)
    view = np.moveaxis(out, axis, 0)
    _scatter_into(
        view, (indices,), updates.reshape((len(indices),) + view.shape[1:]), _scatter_mode(a)
    )
    return out


@register("scatter_along_axis")
def scatter_along_axis(a: Args) -> np.ndarray:
    out = compute(a["data"]).copy()
    axis = axis_of(a.int("axis", 0), out.ndim)
    indices = np.asarray(a["indices"]).astype(np.int64)
    indices = np.where(indices < 0, indices + out.shape[axis], indices)
    grid = list(np.indices(indices.shape, sparse=True))
    grid[axis] = indices
    _scatter_into(out, tuple(grid), compute(a["updates"]), _scatter_mode(a))
    return out


@register("scatter_nd")
def scatter_nd(a: Args) -> np.ndarray:
    out = compute(a["data"]).copy()
    indices = np.asarray(a["indices"]).astype(np.int64)
    index = tuple(np.moveaxis(indices, -1, 0))
    _scatter_into(out, index, compute(a["updates"]), _scatter_mode(a))
    return out


@register("one_hot")
def one_hot(a: Args) -> np.ndarray:
    indices = np.asarray(a["indices"]).astype(np.int64)
    depth = a.int("one_hot_vector_size")
    axis = axis_of(a.int("axis", -1), indices.ndim + 1)
    hot = np.expand_dims(indices, axis) == np.arange(depth).reshape(
        [depth if i == axis else 1 for i in range(indices.ndim + 1)]
    )
    return np.where(hot, compute(a.get("on_value", 1)), compute(a.get("off_value", 0)))


@register("pad")
def pad(a: Args) -> np.ndarray:
    x = compute(a["x"])
    pads = a.ints("pad")
    n = len(pads) // 2
    widths = [(0, 0)] * (x.ndim - n) + [(pads[2 * i], pads[2 * i + 1]) for i in range(n)]
    mode = a.str("mode", "constant")
    if mode == "constant":
        return np.pad(x, widths, constant_values=compute(a.get("constant_val", 0)))
    if mode == "reflect":
        return np.pad(x, widths, mode="reflect")
    if mode == "replicate":
        return np.pad(x, widths, mode="edge")
    raise a.unsupported(f"pad mode '{mode}'")


@register("cumsum")
def cumsum(a: Args) -> np.ndarray:
    x = compute(a["x"])
    axis = axis_of(a.int("axis", 0), x.ndim)
    if a.bool("reverse"):
        x = np.flip(x, axis)
    out = np.cumsum(x, axis=axis, dtype=x.dtype)
    if a.bool("exclusive"):
        out = out - x
    return np.flip(out, axis) if a.bool("reverse") else out


@register("reverse")
def reverse(a: Args) -> np.ndarray:
    x = np.asarray(a["x"])
    axes = a.ints("axes")
    return np.flip(x, None if axes is None else tuple(axes))


@register("band_part")
def band_part(a: Args) -> np.ndarray:
    x = np.asarray(a["x"])
    lower, upper = a.int("lower", -1), a.int("upper", -1)
    rows, cols = x.shape[-2:]
    diff = np.arange(rows)[:, None] - np.arange(cols)[None, :]
    keep = np.ones((rows, cols), bool)
    if lower >= 0:
        keep &= diff <= lower
    if upper >= 0:
        keep &= -diff <= upper
    return np.where(keep, x, np.zeros((), x.dtype))


@register("non_zero")
def non_zero(a: Args) -> np.ndarray:
    return np.argwhere(np.asarray(a["x"]) != 0)


def _order(a: Args, x: np.ndarray, axis: int, ascending: bool) -> np.ndarray:
    # stable sort; descending keeps the first of equal values first
    return np.argsort(x if ascending else -x, axis=axis, kind="stable")


@register("argsort")
def argsort(a: Args) -> np.ndarray:
    x = fcompute(a["x"])
    axis = axis_of(a.int("axis", -1), x.ndim)
    return _order(a, x, axis, a.bool("ascending", False))


@register("topk")
def topk(a: Args) -> tuple[np.ndarray, ...]:
    x = compute(a["x"])
    axis = axis_of(a.int("axis", -1), x.ndim)
    k = a.int("k", 1)
    order = _order(a, fcompute(x), axis, a.bool("ascending", False))
    idx = np.take(order, np.arange(k), axis=axis)
    if not a.bool("sort", True):
        idx = np.sort(idx, axis=axis)
    values = np.take_along_axis(x, idx, axis=axis)
    if len(a.out_dtypes) == 1:
        return values
    return values, idx


@register("pixel_shuffle")
def pixel_shuffle(a: Args) -> np.ndarray:  # PyTorch's channel order
    x = np.asarray(a["x"])
    r = a.int("upscale_factor")
    n, c, h, w = x.shape
    y = x.reshape(n, c // (r * r), r, r, h, w).transpose(0, 1, 4, 2, 5, 3)
    return y.reshape(n, c // (r * r), h * r, w * r)


@register("pixel_unshuffle")
def pixel_unshuffle(a: Args) -> np.ndarray:
    x = np.asarray(a["x"])
    r = a.int("downscale_factor")
    n, c, h, w = x.shape
    y = x.reshape(n, c, h // r, r, w // r, r).transpose(0, 1, 3, 5, 2, 4)
    return y.reshape(n, c * r * r, h // r, w // r)


@register("upsample_nearest_neighbor")
def upsample_nearest_neighbor(a: Args) -> np.ndarray:
    x = np.asarray(a["x"])
    sh, sw = a.float("scale_factor_height", 1.0), a.float("scale_factor_width", 1.0)
    if sh != int(sh) or sw != int(sw):
        raise a.unsupported("non-integer scale factors")
    return np.repeat(np.repeat(x, int(sh), axis=-2), int(sw), axis=-1)
