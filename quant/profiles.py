"""Target profiles: each deployment target's INT8 rules as one small, frozen config object.

The rules are the targets' own (design.md §4); edgegate never invents a scheme.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgegate.errors import BadInput


@dataclass(frozen=True)
class QuantProfile:
    name: str
    weight_bits: int = 8
    weight_per_channel: bool = True
    weight_symmetric: bool = True
    act_bits: int | None = 8  # None: activations stay in float (weight-only)
    act_signed: bool = False  # s8 symmetric (zero point 0) vs u8 asymmetric
    quantize_bias: bool = True
    qdq_on_residual_adds: bool = False

    @property
    def ort_fusion_is_exact(self) -> bool:
        """ORT's fused integer kernels reproduce a Q/DQ graph only with an int32 bias; a float
        bias (TensorRT's rule) they requantize their own way, so such graphs run unfused."""
        return self.quantize_bias

    @property
    def gate_signed(self) -> bool:
        """Gate outputs ([0, 1]) follow the activation sign convention of the target."""
        return self.act_signed


PROFILES: dict[str, QuantProfile] = {
    # TensorRT takes INT8 only from explicit Q/DQ: symmetric everything, float bias.
    "tensorrt": QuantProfile(
        "tensorrt", act_signed=True, quantize_bias=False, qdq_on_residual_adds=True
    ),
    # ONNX Runtime QDQ: s8 per-channel weights, u8 asymmetric per-tensor activations.
    "onnxruntime": QuantProfile("onnxruntime", act_signed=False),
    # Core ML: INT8 per-channel weights by default; W8A8 is opt-in.
    "coreml": QuantProfile("coreml", act_bits=None),
}


def get_profile(name: str, *, w8a8: bool = False) -> QuantProfile:
    if name not in PROFILES:
        raise BadInput(
            f"unknown quantization profile '{name}': expected one of {', '.join(PROFILES)}"
        )
    profile = PROFILES[name]
    if w8a8 and profile.act_bits is None:
        return QuantProfile(profile.name, act_bits=8, act_signed=False)
    return profile
