"""INT8 quantization for gated networks (``edgegate.quant``), with brevitas as the engine.

profiles -> quantizers -> graph (placement) -> calibrate / qat -> qdq (exportable twin).
"""

import warnings

# brevitas warns at import and on every forward about optional features edgegate does not use;
# left on, they would bury the one-line errors and the progress bars.
warnings.filterwarnings("ignore", message=".*fast_hadamard_transform.*")
warnings.filterwarnings("ignore", module=r"brevitas(\..*)?")

from edgegate.quant.gates import UnitRangeInt8, UnitRangeUint8, gate_output_quant, gate_quantizer  # noqa: E402
from edgegate.quant.outliers import LayerStats, activation_stats  # noqa: E402
from edgegate.quant.profiles import PROFILES, QuantProfile, get_profile  # noqa: E402

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
