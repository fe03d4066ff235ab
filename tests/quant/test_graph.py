"""Graph-mode quantization: BN folding, gate-aware quantizer placement, scan feeders, profiles."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear
from torch import nn

from edgegate.errors import BadInput
from edgegate.models import build_model
from edgegate.models.blocks.scans import DeltaRuleScan, GLAScan
from edgegate.quant.batch_norm import fold_batch_norm
from edgegate.quant.calibrate import calibrate
from edgegate.quant.graph import KeepFloat, QuantConfig, quantize_model, trace
from edgegate.quant.graph import scan_feeders as find_scan_feeders
from edgegate.quant.integer_gates import HARD_SIGMOID_OFFSET, SaturatingHardSigmoid
from edgegate.quant.profiles import get_profile
from edgegate.quant.qdq import tensor_quant, to_qdq
from tests.quant.tiny_models import PROFILES, attention_net, mixer_net, tiny_cnn

GATE_SCALE = {"onnxruntime": 1 / 255, "tensorrt": 1 / 127}


def image_batches(n: int = 3, seed: int = 1) -> list[tuple[torch.Tensor, ...]]:
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 3, 16, 16, generator=gen),) for _ in range(n)]


def token_batches(n: int = 3, seed: int = 1) -> list[tuple[torch.Tensor, ...]]:
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(4, 6, 8, generator=gen),) for _ in range(n)]


def config(profile: str, **kwargs) -> QuantConfig:
    return QuantConfig(get_profile(profile), "minmax", **kwargs)


def gate_quants(qmodel: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in qmodel.named_modules() if name.endswith("_gate_quant")}


def compute_layers(qmodel: nn.Module) -> dict[str, nn.Module]:
    return {
        name: m for name, m in qmodel.named_modules() if isinstance(m, QuantConv2d | QuantLinear)
    }


# --- BN folding -------------------------------------------------------------------------------


def test_fold_batch_norm_matches_the_float_model():
    model = tiny_cnn()
    x = torch.randn(16, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        reference = model(x)
    graph_module = trace(model)
    assert fold_batch_norm(graph_module) == 2
    assert not any(isinstance(m, nn.BatchNorm2d) for m in graph_module.modules())
    with torch.no_grad():
        folded = graph_module(x)
        again = model(x)
    torch.testing.assert_close(folded, reference, atol=1e-5, rtol=1e-5)
    # folding works on the traced copy: the original model still has (and uses) its BNs
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    torch.testing.assert_close(again, reference, atol=0.0, rtol=0.0)


@pytest.mark.parametrize("profile", PROFILES)
def test_quantize_model_leaves_no_batch_norm(profile):
    qmodel = quantize_model(tiny_cnn(), config(profile))
    modules = dict(qmodel.named_modules())
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in modules.values())
    for node in qmodel.graph.nodes:
        if node.op == "call_module":
            assert not isinstance(modules[node.target], nn.modules.batchnorm._BatchNorm)
    assert not qmodel.training


# --- gate-aware quantizers --------------------------------------------------------------------

GATED_MODELS = {
    "se": (tiny_cnn, image_batches, {"se_gate_gate_quant"}),
    "softmax": (lambda: attention_net("softmax"), token_batches, {"attn_softmax_gate_quant"}),
    "clipped": (lambda: attention_net("clipped"), token_batches, {"attn_softmax_gate_quant"}),
}


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("kind", sorted(GATED_MODELS))
def test_every_gate_gets_a_fixed_unit_range_quantizer(kind, profile):
    build, batches, expected = GATED_MODELS[kind]
    qmodel = quantize_model(build(), config(profile))
    calibrate(qmodel, batches(n=2))
    quants = gate_quants(qmodel)
    assert expected <= set(quants), sorted(quants)
    probe = torch.cat([torch.tensor([0.0, 1.0, 0.5]), torch.rand(61)])
    for name, quant in quants.items():
        if isinstance(quant, SaturatingHardSigmoid):
            check_saturating_gate(quant)
            continue
        assert isinstance(quant, QuantIdentity), name
        params = tensor_quant(quant.act_quant)
        assert params is not None, name
        assert params.scale == pytest.approx(GATE_SCALE[profile.partition(":")[0]], rel=1e-6), name
        assert params.zero_point == 0, name
        assert params.signed is (profile == "tensorrt"), name
        with torch.no_grad():
            out = quant(probe)
        assert out[0].item() == 0.0 and out[1].item() == 1.0, name
        assert (out - probe).abs().max() <= params.scale / 2 + 1e-7, name


def check_saturating_gate(gate: SaturatingHardSigmoid) -> None:
    """A hard-sigmoid gate as a saturating requantization: its output is hardsigmoid of the
    pre-activation on the fixed u8 [0, 1] grid (1/255), with 0 and 1 exact."""
    six = tensor_quant(gate.six.act_quant)
    assert six.scale == pytest.approx(6 / 255, rel=1e-6) and six.zero_point == 0
    assert not six.signed
    pre = torch.cat([torch.tensor([-9.0, 9.0, -3.0, 3.0]), torch.linspace(-4, 4, 97)])
    # a folded gate's input already holds the +3 (in the bias of the layer before it)
    shift = HARD_SIGMOID_OFFSET - gate.offset
    with torch.no_grad():
        out = gate(pre + shift)
    assert out[:4].tolist() == [0.0, 1.0, 0.0, 1.0]
    assert (out - F.hardsigmoid(pre)).abs().max() <= 0.5 / 255 + 1e-6
    codes = out * 255
    torch.testing.assert_close(codes, codes.round(), atol=1e-4, rtol=0)


@pytest.mark.parametrize("variant", ["softmax", "clipped"])
def test_gate_quantizer_output_reaches_its_consumer_unrequantized(variant):
    qmodel = quantize_model(attention_net(variant), config("onnxruntime"))
    calibrate(qmodel, token_batches(n=2))
    modules = dict(qmodel.named_modules())
    for node in qmodel.graph.nodes:
        if node.op == "call_module" and node.target.endswith("_gate_quant"):
            for user in node.users:
                assert not (
                    user.op == "call_module" and isinstance(modules[user.target], QuantIdentity)
                ), f"{node.target} is requantized by {user.target}"


def test_scan_role_gate_gets_no_quantizer():
    model = mixer_net("gdn")
    assert model.mixer.beta_gate.role == "scan"
    for profile in PROFILES:
        quants = gate_quants(quantize_model(model, config(profile)))
        assert "mixer_beta_gate_gate_quant" not in quants
        # the read-out gate is an ordinary gate and keeps its quantizer
        assert "mixer_out_gate_gate_quant" in quants


def test_input_independent_gc_channel_gate_gets_no_quantizer():
    torch.manual_seed(0)
    model = build_model("gc-mobilenet").eval()
    quants = gate_quants(quantize_model(model, config("onnxruntime")))
    assert "stage1_gc_channel_gate_gate_quant" not in quants
    assert not [n for n in quants if "channel_gate" in n]
    # the input-dependent early-stop gate and the SE gates do get one
    assert "stage1_gc_gate_gate_quant" in quants
    assert any("_block_" in n for n in quants)


# --- scan feeders -----------------------------------------------------------------------------

GLA_FEEDERS = {"mixer.q_proj", "mixer.k_proj", "mixer.v_proj", "mixer.gk_proj.1"}


def test_scan_feeders_finds_the_gla_projections():
    assert find_scan_feeders(trace(mixer_net("gla"))) == GLA_FEEDERS


@pytest.mark.parametrize("profile", PROFILES)
def test_scan_feeders_stay_float_by_default(profile):
    qmodel = quantize_model(mixer_net("gla"), config(profile))
    for name in GLA_FEEDERS:
        wrapped = qmodel.get_submodule(name)
        assert isinstance(wrapped, KeepFloat), name
        assert type(wrapped.layer) is nn.Linear, name
    # everything else is quantized
    for name in ("inp", "out", "mixer.g_proj", "mixer.o_proj", "mixer.gk_proj.0"):
        assert isinstance(qmodel.get_submodule(name), QuantLinear), name


def test_scan_feeders_quantized_on_request():
    qmodel = quantize_model(mixer_net("gla"), config("onnxruntime", quantize_scan_inputs=True))
    assert not any(isinstance(m, KeepFloat) for m in qmodel.modules())
    for name in GLA_FEEDERS:
        assert isinstance(qmodel.get_submodule(name), QuantLinear), name


def _quantizers_between_feeders_and_scans(qmodel: nn.Module) -> list[str]:
    modules = dict(qmodel.named_modules())
    found = []
    for node in qmodel.graph.nodes:
        if node.op != "call_module" or not isinstance(
            modules[node.target], GLAScan | DeltaRuleScan
        ):
            continue
        stack, seen = list(node.all_input_nodes), set()
        while stack:
            producer = stack.pop()
            if producer in seen:
                continue
            seen.add(producer)
            if producer.op == "call_module":
                module = modules[producer.target]
                if isinstance(module, KeepFloat):
                    continue
                if isinstance(module, QuantIdentity):
                    found.append(producer.target)
            stack.extend(producer.all_input_nodes)
    return found


@pytest.mark.parametrize(
    "kind",
    [
        "gla",
        "gdn",
    ],
)
def test_scan_inputs_stay_float_under_tensorrt(kind):
    qmodel = quantize_model(mixer_net(kind), config("tensorrt"))
    assert _quantizers_between_feeders_and_scans(qmodel) == []


# --- profile rules ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def calibrated_cnns() -> dict[str, nn.Module]:
    out = {}
    for profile in PROFILES:
        qmodel = quantize_model(tiny_cnn(), config(profile))
        calibrate(qmodel, image_batches())
        out[profile] = qmodel
    return out


def test_tensorrt_layers_quantize_inputs_only_with_float_bias(calibrated_cnns):
    layers = compute_layers(calibrated_cnns["tensorrt"])
    assert len(layers) == 5
    for name, layer in layers.items():
        assert layer.input_quant.is_quant_enabled, name
        assert not layer.output_quant.is_quant_enabled, name
        assert tensor_quant(layer.output_quant) is None, name
        if layer.bias is not None:
            assert not layer.bias_quant.is_quant_enabled, name


def _output_quantizer(qmodel: nn.Module, node) -> tuple[object, object]:
    """The quantizer a compute layer's output goes through (its proxy and parameters):
    straight after it, after its one ReLU (which the runtime folds into the kernel), or the
    6/255 one of a hard-sigmoid gate whose +3 is folded into the layer's bias."""
    modules = dict(qmodel.named_modules())
    (user,) = node.users
    if isinstance(modules.get(user.target), nn.ReLU):
        (user,) = user.users
    module = modules.get(user.target)
    if isinstance(module, SaturatingHardSigmoid):
        assert module.offset == 0, (node.name, user.target)
        module = module.six
    assert isinstance(module, QuantIdentity), (node.name, user.target)
    return module.act_quant, tensor_quant(module.act_quant)


def test_onnxruntime_quantizes_each_tensor_once_with_int32_bias(calibrated_cnns):
    """onnxruntime's integer kernels take and give quantized tensors: every compute layer's
    output is quantized once (after a ReLU, with zero point 0, so the ReLU folds into the conv),
    and a consumer of a tensor already on a grid shares that quantizer without a second Q/DQ."""
    qmodel = calibrated_cnns["onnxruntime"]
    layers = compute_layers(qmodel)
    assert len(layers) == 4  # the image stem stays float under onnxruntime
    modules = dict(qmodel.named_modules())
    nodes = {n.target: n for n in qmodel.graph.nodes if n.op == "call_module"}
    output_proxies = {}
    for name, layer in layers.items():
        assert layer.input_quant.is_quant_enabled, name
        assert not layer.output_quant.is_quant_enabled, name  # quantized after the layer
        assert layer.bias is not None, name  # folded BN gives every conv a bias
        assert layer.bias_quant.is_quant_enabled, name
        assert layer.bias_quant.quant_injector.bit_width == 32, name
        proxy, quant = _output_quantizer(qmodel, nodes[name])
        assert quant is not None, name
        output_proxies[name] = proxy
        if isinstance(modules.get(next(iter(nodes[name].users)).target), nn.ReLU):
            assert quant.zero_point == 0 and not quant.signed, name
    on_grid = [name for name, layer in layers.items() if layer.input_on_grid]
    assert on_grid, "no layer reads a tensor another quantizer put on its grid"
    for name in on_grid:
        assert any(layers[name].input_quant is p for p in output_proxies.values()), name
    # the Q/DQ twin gives an on-grid input no second Q/DQ, and still an int32 bias
    twin = to_qdq(qmodel)
    for name in on_grid:
        assert twin.get_submodule(name).input_qdq is None, name
        assert twin.get_submodule(name).bias_int is not None, name
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(twin(x), qmodel(x), atol=1e-5)


def test_residual_adds_are_quantized_per_profile(calibrated_cnns):
    """TensorRT: Q/DQ on both add inputs (neither comes straight from a conv here), the sum
    quantized only as the head pooling's input. onnxruntime: inputs on a grid and the sum
    quantized, so the add runs as one integer QLinearAdd."""
    for profile, qmodel in calibrated_cnns.items():
        modules = dict(qmodel.named_modules())
        adds = [n for n in qmodel.graph.nodes if n.op == "call_function" and "add" in n.name]
        assert len(adds) == 1
        for arg in adds[0].args:
            assert arg.op == "call_module" and isinstance(modules[arg.target], QuantIdentity)
            quant = tensor_quant(modules[arg.target].act_quant)
            assert quant is not None
            if profile == "tensorrt":
                assert "residual_quant" in arg.target and quant.signed and quant.zero_point == 0
        (user,) = adds[0].users
        assert isinstance(modules.get(user.target), QuantIdentity), profile
        if profile == "tensorrt":  # quant.tensorrt_placement: DQ -> pool -> Q fuses
            assert user.target.endswith("_trt_quant")
            (pool,) = user.users
            assert isinstance(modules.get(pool.target), nn.AdaptiveAvgPool2d)


# --- bad input --------------------------------------------------------------------------------


def test_coreml_is_weight_only_unless_w8a8():
    """Core ML's default: int8 weights, float activations and gates; --w8a8 adds activations."""
    weight_only = quantize_model(tiny_cnn(), QuantConfig(get_profile("coreml")))
    layers = list(compute_layers(weight_only).values())
    assert layers and all(layer.weight_quant.is_quant_enabled for layer in layers)
    assert not any(tensor_quant(layer.input_quant) for layer in layers)
    assert not [m for m in weight_only.modules() if isinstance(m, QuantIdentity)]
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(weight_only(x), tiny_cnn()(x), atol=0.05)  # int8 weights only
    w8a8 = quantize_model(tiny_cnn(), QuantConfig(get_profile("coreml", w8a8=True)))
    calibrate(w8a8, [(x,)])
    assert all(tensor_quant(layer.input_quant) for layer in compute_layers(w8a8).values())


def test_unknown_method_is_bad_input():
    with pytest.raises(BadInput, match="kmeans"):
        quantize_model(tiny_cnn(), QuantConfig(get_profile("onnxruntime"), "kmeans"))
