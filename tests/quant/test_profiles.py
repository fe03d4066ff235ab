"""Instruction-set variants of the ONNX Runtime profile: what each computes, and where it is exact.

Nothing here depends on the host's instruction set except through the plain `onnxruntime`
alias, whose resolution is checked against the host detector itself.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from edgegate.errors import BadInput
from edgegate.exporters.onnx.export import export_onnx
from edgegate.hostcpu import ISAS, host_isa, isa_from
from edgegate.quant.calibrate import calibrate
from edgegate.quant.graph import QuantConfig, quantize_model
from edgegate.quant.profiles import get_profile, profile_names
from edgegate.quant.qdq import to_qdq
from tests.quant.tiny_models import tiny_cnn

AVX2_ONLY = "flags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma bmi2\n"
AVX512_VNNI = "flags\t\t: fpu sse2 avx avx2 avx512f avx512bw avx512_vnni\n"
AVX_VNNI = "flags\t\t: fpu sse2 avx avx2 avx_vnni\n"


@pytest.mark.parametrize(
    "machine, cpuinfo, isa",
    [
        ("x86_64", AVX2_ONLY, "x86-avx2"),
        ("x86_64", AVX512_VNNI, "x86-vnni"),
        ("x86_64", AVX_VNNI, "x86-vnni"),
        ("x86_64", "", "x86-avx2"),  # flags unknown: the variant that is exact everywhere
        ("aarch64", "Features\t: fp asimd asimddp\n", "arm64"),
        ("arm64", "", "arm64"),
    ],
)
def test_isa_from_cpu_flags(machine, cpuinfo, isa):
    assert isa_from(machine, cpuinfo) == isa


def test_plain_onnxruntime_resolves_to_this_host():
    assert host_isa() in ISAS
    assert get_profile("onnxruntime").name == f"onnxruntime:{host_isa()}"
    assert {"onnxruntime", "onnxruntime:x86-avx2", "tensorrt"} <= set(profile_names())


def test_weight_bits_per_variant():
    assert get_profile("onnxruntime:x86-avx2").weight_bits == 7
    assert get_profile("onnxruntime:x86-vnni").weight_bits == 8
    assert get_profile("onnxruntime:arm64").weight_bits == 8


def test_unknown_variant_is_bad_input():
    with pytest.raises(BadInput, match="onnxruntime:x86-avx2"):
        get_profile("onnxruntime:riscv")


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Per variant: the calibrated fake-quant CNN and its QDQ ONNX."""
    out = {}
    for variant in ("x86-avx2", "x86-vnni"):
        qmodel = quantize_model(
            tiny_cnn(), QuantConfig(get_profile(f"onnxruntime:{variant}"), "minmax")
        )
        calibrate(qmodel, [(_images(16, seed),) for seed in range(1, 5)])
        path = tmp_path_factory.mktemp(variant) / "model.onnx"
        out[variant] = (qmodel, export_onnx(to_qdq(qmodel), (_images(1, 7),), path))
    return out


def _weights(path) -> list[np.ndarray]:
    model = onnx.load(path)
    arrays = [numpy_helper.to_array(i) for i in model.graph.initializer]
    return [a for a in arrays if a.dtype == np.int8 and a.ndim >= 2]  # not the zero points


def test_avx2_weights_are_7_bit_and_vnni_weights_full_range(exported):
    avx2, vnni = _weights(exported["x86-avx2"][1]), _weights(exported["x86-vnni"][1])
    assert len(avx2) == len(vnni) == 4  # the image stem stays float under onnxruntime
    assert max(int(np.abs(w).max()) for w in avx2) == 63
    assert max(int(np.abs(w).max()) for w in vnni) == 127


def _run(path, x: np.ndarray, fused: bool) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.log_severity_level = 3
    if not fused:
        options.add_session_config_entry("session.disable_quant_qdq", "1")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _top1(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.argmax(-1) == b.argmax(-1)).mean())


@pytest.mark.parametrize("variant", ["x86-avx2", "x86-vnni"])
def test_dequantized_graph_reproduces_fake_quant_on_any_host(exported, variant):
    """Run as written (dequantize, then float), every variant computes its fake-quant model."""
    qmodel, path = exported[variant]
    x = _images(200, 99)
    with torch.no_grad():
        fake = qmodel(x).numpy()
    assert _top1(fake, _run(path, x.numpy(), fused=False)) >= 0.995


def test_avx2_variant_fused_kernels_match_the_dequantized_graph_on_any_host(exported):
    """7-bit weights: no int16 pair sum saturates, so the integer kernels of every x86 (and ARM)
    CPU agree with the dequantized graph."""
    _, path = exported["x86-avx2"]
    x = _images(200, 99).numpy() * 3.0  # beyond the calibrated range: inputs clip, not saturate
    fused, plain = _run(path, x, fused=True), _run(path, x, fused=False)
    assert _top1(fused, plain) >= 0.995
