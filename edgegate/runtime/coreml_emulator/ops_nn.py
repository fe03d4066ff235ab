"""Neural-network MIL ops: matmuls, convolution, pooling, normalisation, softmax, reductions.

All of them accumulate in fp32 (fp16 inputs widened), then the engine rounds fp16 outputs:
an fp16 program is emulated as fp16 storage between ops with fp32 arithmetic inside each op.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from edgegate.runtime.coreml_emulator._registry import Args, axis_of, compute, fcompute, register


@register("linear")
def linear(a: Args) -> np.ndarray:
    x, w = fcompute(a["x"]), fcompute(a["weight"])
    out = x @ w.T
    if a.has("bias"):
        out = out + fcompute(a["bias"])
    return out


@register("matmul")
def matmul(a: Args) -> np.ndarray:
    x, y = compute(a["x"]), compute(a["y"])
    if np.issubdtype(x.dtype, np.floating) or np.issubdtype(y.dtype, np.floating):
        x, y = fcompute(x), fcompute(y)
    if a.bool("transpose_x") and x.ndim >= 2:
        x = np.swapaxes(x, -1, -2)
    if a.bool("transpose_y") and y.ndim >= 2:
        y = np.swapaxes(y, -1, -2)
    return np.matmul(x, y)


@register("einsum")
def einsum(a: Args) -> np.ndarray:
    values = [fcompute(v) for v in a.list("values")]
    return np.einsum(a.str("equation"), *values, optimize=True)


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    shifted = x - np.max(x, axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / np.sum(e, axis=axis, keepdims=True)


@register("softmax")
def softmax(a: Args) -> np.ndarray:
    return _softmax(fcompute(a["x"]), a.int("axis", -1))


@register("scaled_dot_product_attention")
def scaled_dot_product_attention(a: Args) -> np.ndarray:
    q, k, v = (fcompute(a[name]) for name in ("query", "key", "value"))
    scores = (q @ np.swapaxes(k, -1, -2)) / np.float32(math.sqrt(q.shape[-1]))
    if a.has("attn_mask"):
        mask = np.asarray(a["attn_mask"])
        if mask.dtype == np.bool_:
            scores = np.where(mask, scores, -np.inf)
        else:
            scores = scores + fcompute(mask)
    return _softmax(scores, -1) @ v


# ---- reductions ------------------------------------------------------------------------------


def _axes(a: Args, rank: int) -> tuple[int, ...]:
    axes = a.ints("axes")
    if axes is None:
        return tuple(range(rank))
    return tuple(axis_of(v, rank) for v in axes)


def _reduction(fn):
    def run(a: Args) -> np.ndarray:
        x = compute(a["x"])
        if np.issubdtype(x.dtype, np.floating):
            x = fcompute(x)
        return fn(x, _axes(a, x.ndim), a.bool("keep_dims"))

    return run


_REDUCTIONS = {
    "reduce_sum": lambda x, ax, kd: np.sum(x, axis=ax, keepdims=kd),
    "reduce_mean": lambda x, ax, kd: np.mean(x, axis=ax, keepdims=kd),
    "reduce_max": lambda x, ax, kd: np.max(x, axis=ax, keepdims=kd),
    "reduce_min": lambda x, ax, kd: np.min(x, axis=ax, keepdims=kd),
    "reduce_prod": lambda x, ax, kd: np.prod(x, axis=ax, keepdims=kd),
    "reduce_l1_norm": lambda x, ax, kd: np.sum(np.abs(x), axis=ax, keepdims=kd),
    "reduce_l2_norm": lambda x, ax, kd: np.sqrt(np.sum(x * x, axis=ax, keepdims=kd)),
    "reduce_sum_square": lambda x, ax, kd: np.sum(x * x, axis=ax, keepdims=kd),
    "reduce_log_sum": lambda x, ax, kd: np.log(np.sum(x, axis=ax, keepdims=kd)),
    "reduce_log_sum_exp": lambda x, ax, kd: _logsumexp(x, ax, kd),
}
for _name, _fn in _REDUCTIONS.items():
    register(_name)(_reduction(_fn))


def _logsumexp(x: np.ndarray, axes: tuple[int, ...], keep_dims: bool) -> np.ndarray:
    top = np.max(x, axis=axes, keepdims=True)
    out = np.log(np.sum(np.exp(x - top), axis=axes, keepdims=True)) + top
    return out if keep_dims else np.squeeze(out, axis=axes)


def _arg_reduction(fn):
    def run(a: Args) -> np.ndarray:
        x = compute(a["x"])
        axis = axis_of(a.int("axis", -1), x.ndim)
        out = fn(x, axis=axis)
        return np.expand_dims(out, axis) if a.bool("keep_dims") else out

    return run


register("reduce_argmax")(_arg_reduction(np.argmax))
register("reduce_argmin")(_arg_reduction(np.argmin))


# ---- normalisation ---------------------------------------------------------------------------


def _normalise(x: np.ndarray, axes: tuple[int, ...], epsilon: float) -> np.ndarray:
    mean = np.mean(x, axis=axes, keepdims=True)
    centred = x - mean
    var = np.mean(centred * centred, axis=axes, keepdims=True)
    return centred / np.sqrt(var + np.float32(epsilon))


@register("layer_norm")
def layer_norm(a: Args) -> np.ndarray:
    x = fcompute(a["x"])
    axes = _axes(a, x.ndim)
    out = _normalise(x, axes, a.float("epsilon", 1e-5))
    shape = [x.shape[i] if i in axes else 1 for i in range(x.ndim)]
    if a.has("gamma"):
        out = out * fcompute(a["gamma"]).reshape(shape)
    if a.has("beta"):
        out = out + fcompute(a["beta"]).reshape(shape)
    return out


def _channel(values, rank: int) -> np.ndarray:
    return fcompute(values).reshape((1, -1) + (1,) * (rank - 2))


@register("batch_norm")
def batch_norm(a: Args) -> np.ndarray:
    x = fcompute(a["x"])
    mean, var = _channel(a["mean"], x.ndim), _channel(a["variance"], x.ndim)
    out = (x - mean) / np.sqrt(var + np.float32(a.float("epsilon", 1e-5)))
    if a.has("gamma"):
        out = out * _channel(a["gamma"], x.ndim)
    if a.has("beta"):
        out = out + _channel(a["beta"], x.ndim)
    return out


@register("instance_norm")
def instance_norm(a: Args) -> np.ndarray:
    x = fcompute(a["x"])
    out = _normalise(x, tuple(range(2, x.ndim)), a.float("epsilon", 1e-5))
    if a.has("gamma"):
        out = out * _channel(a["gamma"], x.ndim)
    if a.has("beta"):
        out = out + _channel(a["beta"], x.ndim)
    return out


@register("l2_norm")
def l2_norm(a: Args) -> np.ndarray:
    x = fcompute(a["x"])
    axes = tuple(range(max(x.ndim - 3, 0), x.ndim))
    norm = np.sqrt(np.sum(x * x, axis=axes, keepdims=True) + np.float32(a.float("epsilon", 1e-6)))
    return x / norm


# ---- convolution and pooling -----------------------------------------------------------------


def _pads(
    a: Args, spatial: tuple[int, ...], kernel: list[int], strides: list[int], dilations: list[int]
) -> list[tuple[int, int]]:
    """(before, after) padding per spatial dim for MIL's pad_type."""
    pad_type = a.str("pad_type", "valid")
    n = len(spatial)
    if pad_type == "valid":
        return [(0, 0)] * n
    if pad_type == "custom":
        pad = a.ints("pad") or [0] * (2 * n)
        return [(pad[2 * i], pad[2 * i + 1]) for i in range(n)]
    if pad_type in ("same", "same_lower"):
        out = []
        for size, k, s, d in zip(spatial, kernel, strides, dilations, strict=True):
            effective = (k - 1) * d + 1
            total = max((math.ceil(size / s) - 1) * s + effective - size, 0)
            small, large = total // 2, total - total // 2
            out.append((small, large) if pad_type == "same" else (large, small))
        return out
    raise a.unsupported(f"pad_type '{pad_type}'")


def _window(xp: np.ndarray, offset: tuple[int, ...], out: list[int], strides: list[int]):
    """The strided slice of padded `xp` ([N, C, *S]) seen by one kernel position."""
    index = [slice(None), slice(None)]
    for o, n, s in zip(offset, out, strides, strict=True):
        index.append(slice(o, o + (n - 1) * s + 1, s))
    return xp[tuple(index)]


@register("conv")
def conv(a: Args) -> np.ndarray:
    x, w = fcompute(a["x"]), fcompute(a["weight"])
    nd = x.ndim - 2
    kernel = list(w.shape[2:])
    strides = a.ints("strides") or [1] * nd
    dilations = a.ints("dilations") or [1] * nd
    groups = a.int("groups", 1)
    pads = _pads(a, x.shape[2:], kernel, strides, dilations)
    xp = np.pad(x, [(0, 0), (0, 0)] + pads)
    out = [
        (xp.shape[2 + i] - (kernel[i] - 1) * dilations[i] - 1) // strides[i] + 1 for i in range(nd)
    ]
    n, c = x.shape[:2]
    cout, cg = w.shape[:2]
    mg = cout // groups
    wg = w.reshape((groups, mg, cg) + tuple(kernel))
    acc = np.zeros((n, groups, mg, int(np.prod(out))), dtype=x.dtype)
    for pos in itertools.product(*(range(k) for k in kernel)):
        offset = tuple(p * d for p, d in zip(pos, dilations, strict=True))
        xs = _window(xp, offset, out, strides).reshape(n, groups, cg, -1)
        wk = wg[(Ellipsis,) + pos]  # [groups, mg, cg]
        if cg == 1:
            acc += xs * wk[None, :, :, :]
        else:
            acc += np.matmul(wk[None], xs)
    result = acc.reshape((n, cout) + tuple(out))
    if a.has("bias") and a.get("bias") is not None:
        result = result + fcompute(a["bias"]).reshape((1, -1) + (1,) * nd)
    return result


def _pool(a: Args, mode: str) -> np.ndarray:
    x = fcompute(a["x"])
    nd = x.ndim - 2
    kernel = a.ints("kernel_sizes")
    strides = a.ints("strides") or [1] * nd
    ones = [1] * nd
    pads = _pads(a, x.shape[2:], kernel, strides, ones)
    ceil_mode = a.bool("ceil_mode")
    out, extra = [], []
    for i in range(nd):
        size, (lo, hi), k, s = x.shape[2 + i], pads[i], kernel[i], strides[i]
        if ceil_mode:
            n = (size + lo + hi - k + s - 1) // s + 1
            if (n - 1) * s >= size + lo and (lo > 0 or hi > 0):
                n -= 1
        else:
            n = (size + lo + hi - k) // s + 1
        out.append(n)
        extra.append(max((n - 1) * s + k - (size + lo + hi), 0))
    widths = [(0, 0), (0, 0)] + [(lo, hi + e) for (lo, hi), e in zip(pads, extra, strict=True)]
    fill = -np.inf if mode == "max" else 0.0
    xp = np.pad(x, widths, constant_values=fill)
    offsets = list(itertools.product(*(range(k) for k in kernel)))
    if mode == "max":
        acc = np.full((x.shape[0], x.shape[1], *out), -np.inf, dtype=x.dtype)
        for off in offsets:
            acc = np.maximum(acc, _window(xp, off, out, strides))
        return acc
    values = xp * xp if mode == "l2" else xp
    acc = np.zeros((x.shape[0], x.shape[1], *out), dtype=x.dtype)
    for off in offsets:
        acc += _window(values, off, out, strides)
    if mode == "l2":
        return np.sqrt(acc)
    # divisor: the window's input cells, or input plus explicit padding (never the ceil overflow)
    exclude = a.bool("exclude_padding_from_average")
    inside = np.ones((1, 1, *x.shape[2:]), dtype=x.dtype)
    if exclude:
        inside = np.pad(inside, widths)
    else:
        inside = np.pad(inside, [(0, 0), (0, 0)] + pads, constant_values=1.0)
        inside = np.pad(inside, [(0, 0), (0, 0)] + [(0, e) for e in extra])
    count = np.zeros((1, 1, *out), dtype=x.dtype)
    for off in offsets:
        count += _window(inside, off, out, strides)
    return acc / count


@register("max_pool")
def max_pool(a: Args) -> np.ndarray:
    return _pool(a, "max")


@register("avg_pool")
def avg_pool(a: Args) -> np.ndarray:
    return _pool(a, "avg")


@register("l2_pool")
def l2_pool(a: Args) -> np.ndarray:
    return _pool(a, "l2")
