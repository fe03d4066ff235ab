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
    Int8WeightPerTensorFloat,
    Int8WeightPerTensorFloatMSE,
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


class Int7WeightPerChannel(Int8WeightPerChannelFloat):
    """7-bit symmetric per-channel weights ([-63, 63]) stored in s8: ONNX Runtime's reduce_range,
    so a u8 activation times a weight, summed in pairs, stays inside int16 (2 * 255 * 63)."""

    bit_width = 7


class Int7WeightPerChannelMSE(Int8WeightPerChannelFloatMSE):
    bit_width = 7


class Int7WeightPerTensor(Int8WeightPerTensorFloat):
    """7-bit symmetric weights with one scale per tensor (``--weight-granularity tensor`` on
    a 7-bit profile)."""

    bit_width = 7


class Int7WeightPerTensorMSE(Int8WeightPerTensorFloatMSE):
    bit_width = 7


# (bits, mse, per channel) -> quantizer
_WEIGHTS = {
    (8, False, True): Int8WeightPerChannelFloat,
    (8, True, True): Int8WeightPerChannelFloatMSE,
    (7, False, True): Int7WeightPerChannel,
    (7, True, True): Int7WeightPerChannelMSE,
    (8, False, False): Int8WeightPerTensorFloat,
    (8, True, False): Int8WeightPerTensorFloatMSE,
    (7, False, False): Int7WeightPerTensor,
    (7, True, False): Int7WeightPerTensorMSE,
}


def weight_quantizer(profile: QuantProfile, method: str) -> type:
    """Symmetric weights at the profile's bit width (8, or 7 on AVX2): one scale per output
    channel, or one per tensor where the profile says so (``--weight-granularity tensor``)."""
    method = check_method(method)
    key = (profile.weight_bits, method == "mse", profile.weight_per_channel)
    if key not in _WEIGHTS:
        raise BadInput(
            f"profile '{profile.name}': {profile.weight_bits}-bit weights are not supported"
        )
    return _WEIGHTS[key]


def bias_quantizer(profile: QuantProfile) -> type | None:
    """int32 bias at scale input*weight, or None: TensorRT keeps bias in float."""
    return Int32Bias if profile.quantize_bias else None
