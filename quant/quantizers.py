"""Which brevitas quantizer each tensor gets, from the target profile and calibration method.

Three calibration methods, one brevitas statistic each:
- ``minmax``: the observed range (absolute max for symmetric, min and max for asymmetric);
- ``percentile``: brevitas's 99.999th percentile, which ignores a handful of outliers;
- ``mse``: the range that minimises the quantization mean squared error.

Weights always use their exact per-channel absolute max (or the MSE range under ``mse``):
weights are known, so clipping them by percentile only throws information away.
"""

from __future__ import annotations

from typing import Literal

from brevitas.core.stats import NegativeMinOrZero
from brevitas.inject.enum import StatsOp
from brevitas.quant import (
    Int8ActPerTensorFloat,
    Int8ActPerTensorFloatMSE,
    Int8WeightPerChannelFloat,
    Int8WeightPerChannelFloatMSE,
    Int32Bias,
    ShiftedUint8ActPerTensorFloat,
    ShiftedUint8ActPerTensorFloatMSE,
    Uint8ActPerTensorFloat,
    Uint8ActPerTensorFloatMSE,
)

from edgegate.errors import BadInput
from edgegate.quant.profiles import QuantProfile

CalibrationMethod = Literal["minmax", "percentile", "mse"]
METHODS: tuple[str, ...] = ("minmax", "percentile", "mse")


class Int8ActMinMax(Int8ActPerTensorFloat):
    """s8 symmetric, scale from the absolute max seen in calibration."""

    scaling_stats_op = StatsOp.MAX


class Uint8ActMinMax(Uint8ActPerTensorFloat):
    """u8 with zero point 0 (non-negative tensors), scale from the max."""

    scaling_stats_op = StatsOp.MAX


class ShiftedUint8ActMinMax(ShiftedUint8ActPerTensorFloat):
    """u8 asymmetric: scale from (max - min), zero point from min."""

    scaling_stats_op = StatsOp.MIN_MAX
    zero_point_stats_impl = NegativeMinOrZero


_SIGNED = {
    "minmax": Int8ActMinMax,
    "percentile": Int8ActPerTensorFloat,
    "mse": Int8ActPerTensorFloatMSE,
}
_ASYMMETRIC = {
    "minmax": ShiftedUint8ActMinMax,
    "percentile": ShiftedUint8ActPerTensorFloat,
    "mse": ShiftedUint8ActPerTensorFloatMSE,
}
_NON_NEGATIVE = {
    "minmax": Uint8ActMinMax,
    "percentile": Uint8ActPerTensorFloat,
    "mse": Uint8ActPerTensorFloatMSE,
}


def check_method(method: str) -> CalibrationMethod:
    if method not in METHODS:
        raise BadInput(
            f"unknown calibration method '{method}': expected one of {', '.join(METHODS)}"
        )
    return method  # type: ignore[return-value]


def act_quantizer(profile: QuantProfile, method: str, *, non_negative: bool = False) -> type:
    """Per-tensor activation quantizer; ``non_negative`` for tensors known to be >= 0 (ReLU)."""
    method = check_method(method)
    if profile.act_signed:
        return _SIGNED[method]
    return (_NON_NEGATIVE if non_negative else _ASYMMETRIC)[method]


def weight_quantizer(profile: QuantProfile, method: str) -> type:
    """s8 symmetric per-output-channel weights (every profile's rule)."""
    method = check_method(method)
    if not profile.weight_per_channel:
        raise BadInput(
            f"profile '{profile.name}' asks for per-tensor weights, which edgegate lacks"
        )
    return Int8WeightPerChannelFloatMSE if method == "mse" else Int8WeightPerChannelFloat


def bias_quantizer(profile: QuantProfile) -> type | None:
    """int32 bias at scale input*weight, or None: TensorRT keeps bias in float."""
    return Int32Bias if profile.quantize_bias else None
