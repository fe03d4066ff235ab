"""Gate-aware quantizers: a gate's output lies in [0, 1] by construction, so its range is fixed.

No calibration: u8 gets scale 1/255 (zero point 0), s8 symmetric gets 1/127 with a narrow
range, so 0.0 and 1.0 are both exactly representable: a closed gate stays closed and an
open one stays open after quantization.
"""

from __future__ import annotations

from brevitas.inject.enum import ScalingImplType
from brevitas.nn import QuantIdentity
from brevitas.quant import Int8ActPerTensorFloat, Uint8ActPerTensorFloat

from edgegate.quant.profiles import QuantProfile


class UnitRangeUint8(Uint8ActPerTensorFloat):
    """[0, 1] on u8: scale 1/255, zero point 0."""

    scaling_impl_type = ScalingImplType.CONST
    min_val = 0.0
    max_val = 1.0


class UnitRangeInt8(Int8ActPerTensorFloat):
    """[0, 1] on s8 symmetric: scale 1/127 (narrow range [-127, 127]), zero point 0."""

    scaling_impl_type = ScalingImplType.CONST
    min_val = -1.0
    max_val = 1.0
    narrow_range = True


def gate_quantizer(profile: QuantProfile) -> type:
    return UnitRangeInt8 if profile.gate_signed else UnitRangeUint8


def gate_output_quant(profile: QuantProfile) -> QuantIdentity:
    """The quantizer placed on a gate's output under ``profile``."""
    return QuantIdentity(act_quant=gate_quantizer(profile), return_quant_tensor=False)
