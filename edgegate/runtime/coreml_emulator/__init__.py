"""A numpy evaluator of Core ML ML Programs, for emulated Core ML parity where Core ML cannot
run (coremltools predicts only on macOS). It walks the MIL ops in order with each var in its
declared dtype, so fp16 programs round like fp16 storage; arithmetic inside an op is fp32.
It is an emulation: it does not reproduce the Neural Engine's or GPU's own kernels.
"""

from edgegate.runtime.coreml_emulator._engine import (
    Emulator,
    evaluate,
    supported_ops,
    unsupported_ops,
)
from edgegate.runtime.coreml_emulator._registry import MILEmulationError, UnsupportedMILOp

__all__ = [
    "Emulator",
    "MILEmulationError",
    "UnsupportedMILOp",
    "evaluate",
    "supported_ops",
    "unsupported_ops",
]
