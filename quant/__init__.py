"""INT8 quantization: target profiles, gate-aware quantizers (``edgegate.quant``).

Work in progress (issue 4): profiles, gate quantizers and outlier statistics exist; PTQ,
QAT, calibration, SQNR and QDQ export do not yet.
"""

from edgegate.quant.gates import UnitRangeInt8, UnitRangeUint8, gate_output_quant, gate_quantizer
from edgegate.quant.outliers import LayerStats, activation_stats
from edgegate.quant.profiles import PROFILES, QuantProfile, get_profile

__all__ = [
    "PROFILES",
    "LayerStats",
    "activation_stats",
    "QuantProfile",
    "UnitRangeInt8",
    "UnitRangeUint8",
    "gate_output_quant",
    "gate_quantizer",
    "get_profile",
]
