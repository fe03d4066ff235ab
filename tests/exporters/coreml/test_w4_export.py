"""W4 models to Core ML: an iOS18 package whose W4Linears are int4
constexpr_blockwise_shift_scale ops holding their own codes and scales (read back from the
saved package), checked in edgegate's numpy emulation of the program against the W4 model
(Core ML itself predicts on macOS only)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from torch import nn

from edgegate.errors import BadInput, ToolchainFailed
from edgegate.quant.weight_only import W4Linear
from tests.quant.w4_models import ParallelW4, prepare_w4

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("coremltools") is None or importlib.util.find_spec("torchao") is None,
    reason="coremltools or torchao not installed",
)


def _export(model, path, precision, example=None):
    from edgegate.exporters.coreml.w4 import export_coreml_w4

    return export_coreml_w4(
        model, (torch.randn(2, 6, 128) if example is None else example,), path,
        input_names=["x"], output_names=["y"], dynamic_dims=[(0, 1)], sequence=True,
        precision=precision,
    )  # fmt: skip


def _emulated(path, feed: dict[str, np.ndarray], output: str) -> np.ndarray:
    from edgegate.runtime.coreml_emulator import Emulator

    return Emulator(path).run(feed)[output]


@pytest.mark.parametrize("symmetric", [True, False])
def test_an_fp32_package_holds_the_exact_codes_and_scales(tmp_path, symmetric):
    """fp32: int4 data equal to the codes (asymmetric ones shifted by 8, with their zero
    points as offsets), float32 scales bit-equal; emulated, the package computes what the W4
    model computes at batch and length other than the traced ones."""
    from edgegate.exporters.coreml.inspect import blockwise_weights, deployment_target, op_counts
    from edgegate.exporters.coreml.inspect import load as load_package

    model = ParallelW4(symmetric=symmetric)
    written = _export(model, tmp_path / "w4.mlpackage", "fp32")
    path = written.export.path
    assert deployment_target(path) == "iOS18"
    assert op_counts(load_package(path))["constexpr_blockwise_shift_scale"] == 3
    assert set(written.weights) == {"a", "b", "c"}
    for name, weight in written.weights.items():
        layer = getattr(model, name)
        assert weight.data_type == "int4"
        shift = 0 if symmetric else 8
        np.testing.assert_array_equal(weight.data.astype(np.int16) + shift, layer.codes.numpy())
        assert weight.scale.dtype == np.float32
        np.testing.assert_array_equal(weight.scale, layer.scales.numpy())
        if symmetric:
            assert weight.offset is None
        else:
            np.testing.assert_array_equal(
                weight.offset.astype(np.int16) + 8, layer.zero_points.numpy()
            )
    assert len(blockwise_weights(path)) == 3
    for shape in [(1, 1, 128), (3, 5, 128), (2, 6, 128)]:
        x = torch.randn(*shape)
        got = _emulated(path, {"x": x.numpy()}, "y")
        with torch.no_grad():
            want = model(x).numpy()
        np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(want).max(), rtol=0)


def test_an_fp16_package_stores_the_scales_in_float16(tmp_path):
    """fp16 (the target's default): the program keeps the scales as float16, each the
    W4Linear's scale rounded to float16; codes exact; emulated within fp16 rounding."""
    model = ParallelW4()
    written = _export(model, tmp_path / "w4.mlpackage", "fp16")
    for name, weight in written.weights.items():
        layer = getattr(model, name)
        np.testing.assert_array_equal(weight.data.astype(np.int8), layer.codes.numpy())
        assert weight.scale.dtype == np.float16
        np.testing.assert_array_equal(weight.scale, layer.scales.numpy().astype(np.float16))
    x = torch.randn(2, 4, 128)
    got = _emulated(written.export.path, {"x": x.numpy()}, "y")
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_allclose(got, want, atol=1e-2 * np.abs(want).max(), rtol=0)


def test_coremltools_own_int4_quantizer_would_not_keep_every_group(tmp_path):
    """Why the constexpr comes from the codes: coremltools' per-block int4 quantizer takes
    max|w| / 7 per group, so a group whose largest code is below 7 comes back with other
    codes and scale; edgegate's export keeps them."""
    import coremltools as ct

    from edgegate.exporters.coreml import prepare_program
    from edgegate.exporters.coreml.convert import convert
    from edgegate.exporters.coreml.inspect import blockwise_weights

    torch.manual_seed(2)
    layer = W4Linear.from_linear(nn.Linear(64, 16), 32)
    layer.codes[:, :32] = torch.div(layer.codes[:, :32], 2, rounding_mode="trunc")  # |code| <= 3
    model = nn.Sequential(layer)
    plain = nn.Linear(64, 16)
    plain.weight.data, plain.bias.data = layer.weight_dequantized(), layer.bias.data.clone()
    program = prepare_program(nn.Sequential(plain), (torch.randn(2, 64),), [(0,)], sequence=False)
    config = ct.optimize.coreml.OpLinearQuantizerConfig(
        mode="linear_symmetric", dtype="int4", granularity="per_block", block_size=32,
        weight_threshold=1,
    )  # fmt: skip
    theirs = ct.optimize.coreml.linear_quantize_weights(
        convert(program, precision="fp32", deployment_target="iOS18"),
        ct.optimize.coreml.OptimizationConfig(global_config=config),
    )
    theirs.save(str(tmp_path / "theirs.mlpackage"))
    (their,) = blockwise_weights(tmp_path / "theirs.mlpackage")
    assert not np.array_equal(their.data[:, :32].astype(np.int8), layer.codes[:, :32].numpy())
    assert not np.array_equal(their.scale[:, 0], layer.scales[:, 0].numpy())
    ours = _export(model, tmp_path / "ours.mlpackage", "fp32", torch.randn(2, 6, 64))
    np.testing.assert_array_equal(ours.weights["0"].data.astype(np.int8), layer.codes.numpy())


def test_a_model_without_w4linear_is_refused(tmp_path):
    from edgegate.exporters.coreml.w4 import export_coreml_w4

    with pytest.raises(BadInput, match="Linear has no W4Linear"):
        export_coreml_w4(
            nn.Linear(8, 8), (torch.randn(2, 8),), tmp_path / "m.mlpackage",
            input_names=["x"], output_names=["y"], dynamic_dims=[(0,)], sequence=False,
        )  # fmt: skip
    assert not (tmp_path / "m.mlpackage").exists()


def test_a_package_without_the_w4_weights_fails_the_check(tmp_path):
    """The read-back check can fail: the same layers exported with float weights."""
    from edgegate.exporters.coreml import export_coreml, prepare_program
    from edgegate.exporters.coreml.w4 import check_carried

    model = ParallelW4()
    plain = nn.Linear(128, 40)
    plain.weight.data, plain.bias.data = model.a.weight_dequantized(), model.a.bias.data.clone()
    program = prepare_program(plain, (torch.randn(2, 128),), [(0,)], sequence=False)
    exported = export_coreml(
        program, tmp_path / "f.mlpackage", input_names=["x"], output_names=["y"],
        precision="fp32", deployment_target="iOS18",
    )  # fmt: skip
    with pytest.raises(ToolchainFailed, match="W4Linear 'a'.*0 blockwise constexprs"):
        check_carried(model, exported.path)


@pytest.mark.slow
def test_gla_lm_in_int4_blocks(tmp_path):
    """The zoo's gla-lm, W4 at group 32 except the decay projections, as the coreml target
    exports an LM (fp16, scans fp32, lengths 1..32): all 22 W4Linears int4 constexprs with
    their codes; emulated, the package's logits stay within fp16's reach of the W4 model's."""
    from edgegate.models import load_model

    lm = prepare_w4(load_model("gla-lm").module.eval())
    tokens = torch.randint(0, 256, (2, 32))
    written = _export(lm, tmp_path / "gla.mlpackage", "fp16", tokens)
    assert len(written.weights) == 22
    for length in (1, 17, 32):
        feed = torch.randint(0, 256, (2, length))
        got = _emulated(written.export.path, {"x": feed.numpy().astype(np.int32)}, "y")
        with torch.no_grad():
            want = lm(feed).numpy()
        error = np.abs(got - want)
        assert error.mean() <= 5e-3 * np.abs(want).max(), (length, error.mean())
        assert (got.argmax(-1) == want.argmax(-1)).mean() >= 0.95
