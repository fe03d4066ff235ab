"""INT8 quantization for gated networks (``edgegate.quant``), with brevitas as the engine.

profiles -> quantizers -> graph (placement) -> calibrate / qat -> qdq (exportable twin).
Submodules load on first use: ``profiles`` is plain Python, and asking for it (the CLI's
choices) should not import brevitas, which takes seconds.
"""

import importlib
import warnings

# brevitas warns at import and on every forward about optional features edgegate does not use;
# left on, they would bury the one-line errors and the progress bars.
warnings.filterwarnings("ignore", message=".*fast_hadamard_transform.*")
warnings.filterwarnings("ignore", module=r"brevitas(\..*)?")

_EXPORTS = {
    "PROFILES": "profiles",
    "QuantProfile": "profiles",
    "get_profile": "profiles",
    "profile_names": "profiles",
    "UnitRangeInt8": "gates",
    "UnitRangeUint8": "gates",
    "gate_output_quant": "gates",
    "gate_quantizer": "gates",
    "LayerStats": "outliers",
    "activation_stats": "outliers",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module '{__name__}' has no attribute '{name}'")
