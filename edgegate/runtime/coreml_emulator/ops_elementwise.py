"""Elementwise MIL ops: binary arithmetic and comparisons, unary math, activations, cast.

Floating inputs are computed in fp32 (fp16 widened); the engine rounds fp16 outputs afterwards.
Integer arithmetic stays integer.
"""

from __future__ import annotations

import math

import numpy as np

from edgegate.runtime.coreml_emulator._program import NUMPY_DTYPES
from edgegate.runtime.coreml_emulator._registry import Args, compute, fcompute, register

try:  # scipy comes with scikit-learn (an edgegate dependency); fall back if absent
    from scipy.special import erf as _erf
except ImportError:  # pragma: no cover
    _erf = np.vectorize(math.erf, otypes=[np.float64])


def erf(x: np.ndarray) -> np.ndarray:
    return np.asarray(_erf(x), dtype=x.dtype)


def _pair(a: Args) -> tuple[np.ndarray, np.ndarray, bool]:
    x, y = compute(a["x"]), compute(a["y"])
    integral = not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(y.dtype, np.floating))
    if not integral:
        x, y = fcompute(x), fcompute(y)
    return x, y, integral


def _binary(fn):
    def run(a: Args) -> np.ndarray:
        x, y, _ = _pair(a)
        return fn(x, y)

    return run


_SIMPLE_BINARY = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "maximum": np.maximum,
    "minimum": np.minimum,
    "mod": np.mod,
    "equal": np.equal,
    "not_equal": np.not_equal,
    "less": np.less,
    "less_equal": np.less_equal,
    "greater": np.greater,
    "greater_equal": np.greater_equal,
    "logical_and": np.logical_and,
    "logical_or": np.logical_or,
    "logical_xor": np.logical_xor,
}
for _name, _fn in _SIMPLE_BINARY.items():
    register(_name)(_binary(_fn))


@register("real_div")
def real_div(a: Args) -> np.ndarray:
    x, y, integral = _pair(a)
    if integral:  # integer division rounds toward zero
        return np.trunc(x.astype(np.float64) / y).astype(np.int64)
    return x / y


@register("floor_div")
def floor_div(a: Args) -> np.ndarray:
    x, y, integral = _pair(a)
    return np.floor_divide(x, y) if integral else np.floor(x / y)


@register("pow")
def pow_(a: Args) -> np.ndarray:
    x, y, integral = _pair(a)
    if integral:
        return np.power(x.astype(np.int64), y.astype(np.int64))
    return np.power(x, y)


def _unary(fn):
    def run(a: Args) -> np.ndarray:
        return fn(fcompute(a["x"]))

    return run


_SIMPLE_UNARY = {
    "acos": np.arccos,
    "asin": np.arcsin,
    "atan": np.arctan,
    "atanh": np.arctanh,
    "ceil": np.ceil,
    "cos": np.cos,
    "cosh": np.cosh,
    "erf": erf,
    "exp": np.exp,
    "exp2": np.exp2,
    "floor": np.floor,
    "round": np.round,
    "sign": np.sign,
    "sin": np.sin,
    "sinh": np.sinh,
    "sqrt": np.sqrt,
    "square": np.square,
    "tan": np.tan,
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0),
    "relu6": lambda x: np.clip(x, 0, 6),
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "silu": lambda x: x / (1 + np.exp(-x)),
    "softplus": lambda x: np.logaddexp(0, x),
    "softsign": lambda x: x / (1 + np.abs(x)),
}
for _name, _fn in _SIMPLE_UNARY.items():
    register(_name)(_unary(_fn))


@register("abs")
def abs_(a: Args) -> np.ndarray:
    return np.abs(compute(a["x"]))


@register("logical_not")
def logical_not(a: Args) -> np.ndarray:
    return np.logical_not(a["x"])


def _eps(a: Args, default: float) -> float:
    return a.float("epsilon", default)


@register("log")
def log(a: Args) -> np.ndarray:
    return np.log(fcompute(a["x"]) + _eps(a, 1e-45))


@register("inverse")
def inverse(a: Args) -> np.ndarray:
    return 1 / (fcompute(a["x"]) + _eps(a, 1e-4))


@register("rsqrt")
def rsqrt(a: Args) -> np.ndarray:
    return 1 / np.sqrt(fcompute(a["x"]) + _eps(a, 1e-12))


@register("clip")
def clip(a: Args) -> np.ndarray:
    return np.minimum(np.maximum(fcompute(a["x"]), a.float("alpha")), a.float("beta"))


@register("threshold")
def threshold(a: Args) -> np.ndarray:
    return np.maximum(fcompute(a["x"]), a.float("alpha"))


@register("cast")
def cast(a: Args) -> np.ndarray:
    target = NUMPY_DTYPES.get(a.str("dtype"))
    if target is None:
        raise a.unsupported(f"cast to '{a.str('dtype')}'")
    x = np.asarray(a["x"])
    if np.issubdtype(x.dtype, np.floating) and np.issubdtype(target, np.integer):
        x = np.trunc(x)
    return x.astype(target)


@register("gelu")
def gelu(a: Args) -> np.ndarray:
    x = fcompute(a["x"])
    mode = a.str("mode", "EXACT")
    if mode == "EXACT":
        return 0.5 * x * (1 + erf(x / np.sqrt(2).astype(x.dtype)))
    if mode == "TANH_APPROXIMATION":
        inner = np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)
        return 0.5 * x * (1 + np.tanh(inner.astype(x.dtype)))
    if mode == "SIGMOID_APPROXIMATION":
        return x / (1 + np.exp(-1.702 * x))
    raise a.unsupported(f"gelu mode '{mode}'")


@register("elu")
def elu(a: Args) -> np.ndarray:
    x = fcompute(a["x"])
    return np.where(x > 0, x, a.float("alpha", 1.0) * (np.exp(np.minimum(x, 0)) - 1))


@register("leaky_relu")
def leaky_relu(a: Args) -> np.ndarray:
    x = fcompute(a["x"])
    return np.where(x >= 0, x, a.float("alpha", 0.01) * x)


@register("sigmoid_hard")
def sigmoid_hard(a: Args) -> np.ndarray:
    x = fcompute(a["x"])
    return np.clip(a.float("alpha", 0.2) * x + a.float("beta", 0.5), 0, 1)


@register("linear_activation")
def linear_activation(a: Args) -> np.ndarray:
    return a.float("alpha") * fcompute(a["x"]) + a.float("beta", 0.0)


@register("scaled_tanh")
def scaled_tanh(a: Args) -> np.ndarray:
    return a.float("alpha", 1.0) * np.tanh(a.float("beta", 1.0) * fcompute(a["x"]))


@register("thresholded_relu")
def thresholded_relu(a: Args) -> np.ndarray:
    x = fcompute(a["x"])
    return np.where(x > a.float("alpha", 1.0), x, 0)


@register("clamped_relu")
def clamped_relu(a: Args) -> np.ndarray:
    x = fcompute(a["x"])
    return np.minimum(np.where(x >= 0, x, a.float("alpha") * x), a.float("beta"))


def _per_channel(values: np.ndarray, rank: int) -> np.ndarray:
    """A [C] parameter shaped to broadcast over axis 1 of a rank-`rank` tensor."""
    return fcompute(values).reshape((1, -1) + (1,) * (rank - 2))


@register("prelu")
def prelu(a: Args) -> np.ndarray:
    x = fcompute(a["x"])
    alpha = _per_channel(a["alpha"], x.ndim)
    return np.where(x >= 0, x, alpha * x)


@register("softplus_parametric")
def softplus_parametric(a: Args) -> np.ndarray:
    x = fcompute(a["x"])
    alpha, beta = _per_channel(a["alpha"], x.ndim), _per_channel(a["beta"], x.ndim)
    return alpha * np.logaddexp(0, beta * x)


@register("select")
def select(a: Args) -> np.ndarray:
    av, bv = compute(a["a"]), compute(a["b"])
    if np.issubdtype(av.dtype, np.floating) or np.issubdtype(bv.dtype, np.floating):
        av, bv = fcompute(av), fcompute(bv)
    return np.where(np.asarray(a["cond"]).astype(bool), av, bv)
