"""Target ``onnxruntime``: ONNX for ONNX Runtime, scans lowered to its native kernel.

Gated scans become ``com.microsoft.LinearAttention`` (about 20x faster than the Scan
fallback on CPU). INT8 files run on ORT's fused integer kernels, whose arithmetic depends on
the CPU: without VNNI, x86 kernels add u8*s8 product pairs in a saturating int16, which is
why the ``onnxruntime`` INT8 profile has one variant per instruction set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgegate.hostcpu import ARM64, X86_AVX2, X86_VNNI, host_isa
from edgegate.manifest import Manifest
from edgegate.quant.profiles import PROFILES
from edgegate.runtime import OnnxRuntimeRunner
from edgegate.targets.onnx import OnnxTarget
from edgegate.validate.parity import Tolerance, top1_agreement

AVX2_PROFILE = f"onnxruntime:{X86_AVX2}"
# MatMulNBits' accuracy_level per deployment ISA: 4 (activations quantized to int8 inside the
# kernel, int8 dot products) where the CPU has fast ones (VNNI, ARM sdot); 0 (float compute,
# the input's type) on AVX2 without VNNI. Level 4 is reported 2.3x faster in CPU decode.
W4_ACCURACY_LEVELS = {X86_VNNI: 4, ARM64: 4, X86_AVX2: 0}


class OnnxRuntimeTarget(OnnxTarget):
    name = "onnxruntime"
    summary = "ONNX for ONNX Runtime: scans lowered to com.microsoft.LinearAttention"
    default_profile = "onnxruntime"
    profile_families = ("onnxruntime",)
    portable = False
    lowering = "onnxruntime"
    fuse_qdq = True  # ORT's own integer kernels, as deployed
    w4_form = "matmulnbits"
    w4_symmetric = False  # MatMulNBits takes a zero point per block

    def w4_settings(self, profile: str) -> dict[str, str]:
        """The deployment ISA (the profile's variant) and MatMulNBits' accuracy level for it."""
        isa = PROFILES[profile].name.partition(":")[2] if profile in PROFILES else host_isa()
        level = W4_ACCURACY_LEVELS[isa]
        return {
            "w4_isa": isa,
            "w4_accuracy_level": str(level),
            "w4_precision": "int8" if level == 4 else "fp32",  # level 4: int8 activations
        }

    def host_warnings(
        self, manifest: Manifest | None, model_file: str, directory: Path | None = None
    ) -> list[str]:
        profile = PROFILES.get((manifest.quant or {}).get("profile", "")) if manifest else None
        if profile is None or profile.weight_bits <= 7 or host_isa() != X86_AVX2:
            return []
        return [
            f"{model_file} has full-range int8 weights (profile {profile.name}), which this "
            f"AVX2 host's u8s8 kernels saturate: quantize with --profile {AVX2_PROFILE} to "
            "run it here"
        ]

    def kernel_check(
        self, path: Path, feed: dict[str, np.ndarray], output: str, threads: int | None
    ) -> dict[str, Any] | None:
        """Top-1 agreement (percent) of the fused integer kernels with the same graph run as
        written (dequantize, then float): 100 unless the kernels round or saturate otherwise.
        Also over the rows that are not near-ties (the written graph's top two further apart
        than the INT8 tolerance), where a one-step rounding difference cannot decide."""
        with (
            OnnxRuntimeRunner(path, threads=threads, fuse_qdq=True) as fused,
            OnnxRuntimeRunner(path, threads=threads, fuse_qdq=False) as written,
        ):
            fused_out, written_out = fused.run(feed)[output], written.run(feed)[output]
        near_tie = Tolerance.for_precision("int8").allowed_abs(written_out)
        decisive = top1_agreement(written_out, fused_out, near_tie)
        return {
            "top1_agreement": round(top1_agreement(written_out, fused_out), 4),
            "decisive_top1_agreement": None if decisive is None else round(decisive, 4),
            "max_abs": float(np.abs(fused_out - written_out).max()) if fused_out.size else 0.0,
            "samples": int(len(next(iter(feed.values())))),
        }


TARGET = OnnxRuntimeTarget()
