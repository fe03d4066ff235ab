"""Target profiles: each deployment target's INT8 rules as one small, frozen config object.

The rules are the targets' own (design.md §4); edgegate never invents a scheme. ONNX Runtime's
rules depend on the deployment CPU's integer instructions, so its profile has one variant per
instruction set (``onnxruntime:arm64``, ``onnxruntime:x86-vnni``, ``onnxruntime:x86-avx2``);
plain ``onnxruntime`` means "the machine running edgegate", resolved once and recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from edgegate.errors import BadInput
from edgegate.hostcpu import ARM64, X86_AVX2, X86_VNNI, host_isa


@dataclass(frozen=True)
class QuantProfile:
    name: str
    weight_bits: int = 8  # 7 = ONNX Runtime's reduce_range, for u8s8 kernels that saturate
    weight_per_channel: bool = True
    weight_symmetric: bool = True
    act_bits: int | None = 8  # None: activations stay in float (weight-only)
    act_signed: bool = False  # s8 symmetric (zero point 0) vs u8 asymmetric
    quantize_bias: bool = True
    qdq_on_residual_adds: bool = False
    description: str = ""
    # who quantizes: edgegate's brevitas graph passes, or the target's own toolchain ("pt2e":
    # ExecuTorch's XNNPACK quantizer), whose scheme the fields above then do not drive
    engine: str = "brevitas"
    # the state inputs of a streaming export (``quantize --streaming``): None keeps them float.
    # Float by default, like the scan itself (design.md §4): a state is the sum of every step
    # so far, so a rounding error put on it at each call is carried into all later steps, and
    # its range grows with the sequence, which a range fixed at calibration must then cover.
    # 8 quantizes each state input per tensor with the profile's activation scheme, its range
    # calibrated from states reached over whole calibration sequences (``--quantize-state``).
    state_bits: int | None = None
    # hard-sigmoid gates and hard-swish as saturating requantizations of x + 3 (edgegate.quant.
    # integer_gates), which ONNX Runtime runs as integer adds and multiplies
    integer_gates: bool = False
    # a conv reading the model's image input (at most MAX_STEM_CHANNELS channels) stays float:
    # ONNX Runtime's u8 convs over 3 input channels are slower than its FP32 ones, and the
    # float image then needs no quantizing at full resolution (edgegate.quant.graph)
    float_image_stem: bool = False
    # attention blocks kept in integer kernels: shared grids through layout ops, quantized
    # gate products and softmax inputs, the clipped softmax as a requantization, linears on
    # 3D inputs as 2D Gemms (edgegate.quant.integer_attention), as ONNX Runtime runs them
    integer_attention: bool = False

    @property
    def family(self) -> str:
        """The profile without its instruction-set variant (``onnxruntime:x86-avx2`` ->
        ``onnxruntime``)."""
        return self.name.partition(":")[0]

    @property
    def gate_signed(self) -> bool:
        """Gate outputs ([0, 1]) follow the activation sign convention of the target."""
        return self.act_signed


def _onnxruntime(isa: str, weight_bits: int, why: str) -> QuantProfile:
    # residual adds quantized, as onnxruntime's own quantizer does: the add then runs as one
    # integer QLinearAdd instead of DQ, float Add, Q
    return QuantProfile(
        f"onnxruntime:{isa}",
        weight_bits=weight_bits,
        act_signed=False,
        qdq_on_residual_adds=True,
        integer_gates=True,
        float_image_stem=True,
        integer_attention=True,
        description=why,
    )


PROFILES: dict[str, QuantProfile] = {
    p.name: p
    for p in (
        # ONNX Runtime QDQ: s8 per-channel weights, u8 asymmetric per-tensor activations.
        _onnxruntime(ARM64, 8, "ARM sdot/udot: full-range s8 weights"),
        _onnxruntime(X86_VNNI, 8, "x86 with AVX-512 VNNI or AVX-VNNI: full-range s8 weights"),
        _onnxruntime(X86_AVX2, 7, "x86 without VNNI: 7-bit weights, so u8s8 pair sums fit int16"),
        # TensorRT takes INT8 only from explicit Q/DQ: symmetric everything, float bias.
        QuantProfile(
            "tensorrt",
            act_signed=True,
            quantize_bias=False,
            qdq_on_residual_adds=True,
            description="explicit Q/DQ, symmetric s8 activations, float bias",
        ),
        # Core ML: INT8 per-channel weights by default; W8A8 is opt-in.
        QuantProfile("coreml", act_bits=None, description="int8 weights (--w8a8: u8 activations)"),
        # ExecuTorch: XNNPACK's own PT2E quantizer applies its scheme (edgegate.quant.pt2e):
        # s8 per-channel symmetric weights, s8 affine per-tensor activations.
        QuantProfile(
            "executorch",
            engine="pt2e",
            description="XNNPACK via PT2E: s8 per-channel weights, s8 affine activations",
        ),
    )
}
HOST_ALIASES: dict[str, str] = {"onnxruntime": "onnxruntime:{isa}"}


def profile_names() -> list[str]:
    """Every name ``get_profile`` takes: the aliases that resolve per host, then the variants."""
    return [*HOST_ALIASES, *PROFILES]


def resolve_name(name: str) -> str:
    """The concrete profile name: a host alias (plain ``onnxruntime``) becomes this host's."""
    alias = HOST_ALIASES.get(name)
    return alias.format(isa=host_isa()) if alias else name


def check_profile_name(name: str) -> str:
    """``name`` if ``get_profile`` takes it; BadInput listing every name otherwise."""
    if resolve_name(name) not in PROFILES:
        raise BadInput(
            f"unknown quantization profile '{name}': expected one of {', '.join(profile_names())}"
        )
    return name


WEIGHT_GRANULARITIES: tuple[str, ...] = ("channel", "tensor")


def weight_granularity(profile: QuantProfile) -> str:
    """``channel`` or ``tensor``: how many scales each weight tensor gets under ``profile``."""
    return "channel" if profile.weight_per_channel else "tensor"


def get_profile(
    name: str,
    *,
    w8a8: bool = False,
    quantize_state: bool = False,
    granularity: str | None = None,
) -> QuantProfile:
    """The profile called ``name`` (host aliases resolved), W8A8 under weight-only targets,
    with 8-bit streaming state inputs when ``quantize_state``, and one weight scale per
    output channel or per tensor when ``granularity`` says so (None: the profile's own)."""
    profile = PROFILES[resolve_name(check_profile_name(name))]
    if granularity is not None:
        if granularity not in WEIGHT_GRANULARITIES:
            raise BadInput(
                f"unknown weight granularity '{granularity}': expected one of "
                f"{', '.join(WEIGHT_GRANULARITIES)}"
            )
        profile = replace(profile, weight_per_channel=granularity == "channel")
    if w8a8 and profile.act_bits is None:
        profile = replace(profile, act_bits=8, act_signed=False)
    if quantize_state:
        if profile.act_bits is None:
            raise BadInput(
                f"--quantize-state needs quantized activations, which profile '{profile.name}' "
                "keeps float (add --w8a8)"
            )
        profile = replace(profile, state_bits=8)
    return profile
