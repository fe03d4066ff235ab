"""The onnxruntime target: instruction-set warnings and the fused-kernel check."""

from __future__ import annotations

import pytest

from edgegate.manifest import Manifest
from edgegate.quant.profiles import PROFILES
from edgegate.targets import for_profile, get_target


@pytest.mark.parametrize(
    "profile, host, warns",
    [
        ("onnxruntime:x86-vnni", "x86-avx2", True),
        ("onnxruntime:arm64", "x86-avx2", True),
        ("onnxruntime:x86-avx2", "x86-avx2", False),
        ("onnxruntime:x86-vnni", "x86-vnni", False),
        ("onnxruntime:x86-vnni", "arm64", False),
        ("tensorrt", "x86-avx2", False),  # a portable Q/DQ file: checked as written
    ],
)
def test_full_range_model_on_an_avx2_host_warns_and_names_the_fix(
    monkeypatch, profile, host, warns
):
    import edgegate.targets.onnxruntime as ort_target

    monkeypatch.setattr(ort_target, "host_isa", lambda: host)
    target = for_profile(PROFILES[profile].family)
    manifest = Manifest("m", target.name, "int8", [], ["logits"], quant={"profile": profile})
    # (a TensorRT kit may also warn that its engine did not run here: not about the ISA)
    lines = [line for line in target.host_warnings(manifest, "model.int8.onnx") if "AVX2" in line]
    assert len(lines) == int(warns)
    if warns:
        assert "--profile onnxruntime:x86-avx2" in lines[0] and "\n" not in lines[0]


def test_profiles_map_to_the_targets_that_run_them():
    assert for_profile("onnxruntime").name == "onnxruntime"
    assert for_profile("tensorrt").name == "tensorrt"
    assert for_profile("coreml").name == "coreml"
    assert for_profile("executorch").name == "executorch"
    assert get_target("onnxruntime").fuse_qdq and not get_target("onnx").fuse_qdq
