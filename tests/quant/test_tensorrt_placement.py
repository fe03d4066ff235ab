"""The `tensorrt` profile's Q/DQ, checked rule by rule against TensorRT's documented fusions.

Each test exports a tiny model (real brevitas calibration, real ONNX export, the graph the
TensorRT kit ships) and checks one rule. Sources, as TensorRT documents them:
- [EQ] developer guide, "Explicit Quantization" (Q/DQ processing, layer-placement
  recommendations, Q/DQ limitations):
  https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/quantized-types-explicit-quantization.html
- [QT] "Working with Quantized Types" (per-tensor / per-channel scales, symmetric INT8):
  https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/work-quantized-types.html
- [BP] 8.x developer guide, performance best practices, "Types of Fusions", "PointWise Fusion"
  and "Q/DQ Fusion": https://docs.nvidia.com/deeplearning/tensorrt/archives/tensorrt-803/developer-guide/index.html
  (now the "Layer Fusion Catalog":
  https://docs.nvidia.com/deeplearning/tensorrt/latest/performance/fusion-catalog.html)
- [PQ] pytorch-quantization, "Quantizing Resnet50", "Further optimization":
  https://github.com/NVIDIA/TensorRT/blob/main/tools/pytorch-quantization/docs/source/tutorials/quant_resnet50.rst
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

from edgegate.exporters.onnx.export import export_onnx
from edgegate.exporters.tensorrt import for_tensorrt
from edgegate.models.blocks import ConvBNAct
from edgegate.models.mobilenet_v3 import ClassifierHead, InvertedResidual
from edgegate.quant.calibrate import calibrate
from edgegate.quant.graph import QuantConfig, quantize_model
from edgegate.quant.profiles import get_profile
from edgegate.quant.qdq import QuantDequant, to_qdq
from tests.quant.tiny_models import attention_net

SIZE = 16
WEIGHTED = ("Conv", "Gemm")
ACTIVATIONS = ("HardSwish", "HardSigmoid", "Relu", "Sigmoid", "Clip")
SHAPE_OPS = ("Reshape", "Flatten", "Unsqueeze", "Squeeze", "Transpose")  # commute with Q/DQ


class TinyMobile(nn.Module):
    """MobileNetV3 in small: hard-swish stem, an inverted residual with SE (hard-sigmoid gate)
    and a skip connection, and the pooled Linear -> hard-swish -> Linear classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvBNAct(3, 8, 3, stride=2, act="hardswish")
        self.block = InvertedResidual(8, 3, 16, 8, se=True, act="hardswish", stride=1)
        self.head = ClassifierHead(8, 16, 10, dropout=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.stem(x)))


class SelfGated(nn.Module):
    """conv -> x * hardsigmoid(x) (hard-swish written out) -> conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.out = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.out(y * F.hardsigmoid(y))


class TwoConvResidual(nn.Module):
    """conv(x) + conv(x): both add inputs come straight from a conv (ResNet's projection)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a = nn.Conv2d(8, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 1)
        self.out = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        return self.out(self.a(x) + self.b(x))


def _seeded(model: nn.Module) -> nn.Module:
    for module in model.modules():  # BatchNorms far from identity, so folding matters
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1.0, 1.0)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def _tokens(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 6, 8, generator=torch.Generator().manual_seed(seed))


class Graph:
    """An exported ONNX graph with its producers and consumers, for rule checks."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.nodes = list(model.graph.node)
        self.inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        self.producer = {out: n for n in self.nodes for out in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in self.nodes:
            for name in node.input:
                self.consumers[name].append(node)
        self.outputs = {o.name for o in model.graph.output}

    def of(self, op_type: str) -> list[onnx.NodeProto]:
        return [n for n in self.nodes if n.op_type == op_type]

    def source(self, tensor: str) -> str | None:
        """The op type writing ``tensor`` (None for initializers and graph inputs)."""
        node = self.producer.get(tensor)
        return node.op_type if node else None

    def behind_shape_ops(self, tensor: str) -> str:
        while self.source(tensor) in SHAPE_OPS:
            tensor = self.producer[tensor].input[0]
        return tensor

    def readers(self, tensor: str) -> list[onnx.NodeProto]:
        """Consumers of ``tensor``, looking through shape-only ops."""
        found = []
        for node in self.consumers[tensor]:
            if node.op_type in SHAPE_OPS:
                found += self.readers(node.output[0])
            else:
                found.append(node)
        return found

    def quantized_output(self, node: onnx.NodeProto) -> bool:
        readers = self.readers(node.output[0])
        return bool(readers) and all(r.op_type == "QuantizeLinear" for r in readers)

    def scale(self, qdq: onnx.NodeProto) -> np.ndarray:
        return self.inits[qdq.input[1]]


def _export(model: nn.Module, batches: list[tuple], example: tuple, tmp) -> dict:
    qmodel = quantize_model(model, QuantConfig(get_profile("tensorrt"), "minmax"))
    calibrate(qmodel, batches)
    twin = to_qdq(qmodel)
    path = export_onnx(twin, example, tmp / "model.onnx")
    shipped = for_tensorrt(onnx.load(path), [list(t.shape) for t in example])
    onnx.save(shipped, tmp / "trt.onnx")
    return {"fake": qmodel, "twin": twin, "path": tmp / "trt.onnx", "graph": Graph(shipped)}


@pytest.fixture(scope="module")
def mobile(tmp_path_factory) -> dict:
    torch.manual_seed(0)
    batches = [(_images(8, seed),) for seed in range(1, 4)]
    return _export(_seeded(TinyMobile()), batches, (_images(1, 7),), tmp_path_factory.mktemp("m"))


@pytest.fixture(scope="module")
def graph(mobile) -> Graph:
    return mobile["graph"]


# --- weighted ops -----------------------------------------------------------------------------


def test_weighted_op_inputs_are_all_dequantized(graph):
    """[EQ] placement recommendations: quantize all inputs of weighted operations (conv, GEMM)."""
    weighted = [n for n in graph.nodes if n.op_type in WEIGHTED]
    assert len(weighted) == 8  # stem, expand, depthwise, SE fc1 and fc2, project, 2 head
    for node in weighted:
        data, weight = node.input[:2]
        assert graph.source(data) == "DequantizeLinear", node.name
        assert graph.source(weight) == "DequantizeLinear", node.name
        stored = graph.producer[weight].input[0]
        assert graph.inits[stored].dtype == np.int8, node.name


def test_weights_are_per_channel_on_axis_0_and_activations_per_tensor(graph):
    """[EQ] placement recommendations and [QT]: per-channel weights (scale per output channel,
    axis 0, also for PyTorch's transposed Gemm weight), per-tensor activations."""
    weights = {n.input[1] for n in graph.nodes if n.op_type in WEIGHTED}
    for node in graph.of("DequantizeLinear"):
        scale = graph.scale(node)
        if node.output[0] in weights:
            stored = graph.inits[node.input[0]]
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            assert axis == 0 and scale.shape == (stored.shape[0],), node.name
        else:
            assert scale.size == 1, node.name
    for node in graph.of("QuantizeLinear"):
        assert graph.scale(node).size == 1, node.name


def test_zero_points_are_zero_int8(graph):
    """[QT] symmetric INT8 scheme; [BP] Q/DQ fusion needs zero_point 0."""
    for node in graph.of("QuantizeLinear") + graph.of("DequantizeLinear"):
        zero_point = graph.inits[node.input[2]]
        assert zero_point.dtype == np.int8 and not zero_point.any(), node.name


def test_bias_stays_float_without_qdq(graph):
    """[BP] Q/DQ fusion: TensorRT quantizes the bias itself (scale = input x weight scale), so
    the bias input of a weighted op carries no Q/DQ."""
    biased = [n for n in graph.nodes if n.op_type in WEIGHTED and len(n.input) > 2]
    assert biased
    for node in biased:
        assert node.input[2] in graph.inits, node.name
        assert graph.inits[node.input[2]].dtype == np.float32, node.name
    assert not [k for k, v in graph.inits.items() if v.dtype == np.int32]


def test_activation_after_a_weighted_op_is_not_split_by_qdq(graph):
    """[EQ] by default do not quantize the outputs of weighted operations; [BP] conv +
    activation and point-wise fusions: the activation fuses into the conv, the next Q too."""
    fused = 0
    for node in graph.nodes:
        if node.op_type not in WEIGHTED:
            continue
        readers = graph.consumers[node.output[0]]
        assert not any(r.op_type == "QuantizeLinear" for r in readers if len(readers) > 1)
        if readers and readers[0].op_type in ACTIVATIONS:
            (activation,) = readers  # the raw conv output goes to the activation alone
            assert graph.quantized_output(activation), activation.name
            fused += 1
    assert fused == 6  # stem, expand, depthwise, SE fc1 (ReLU), SE fc2 (gate), head hard-swish


# --- residual adds ----------------------------------------------------------------------------


def test_residual_add_quantizes_only_the_skip_input(graph, tmp_path):
    """[EQ] quantize the residual input in skip connections ([PQ] "Further optimization"): the
    conv output enters the add with no Q/DQ, so TensorRT fuses the add into the conv."""
    (add,) = graph.of("Add")
    sources = sorted(graph.source(t) for t in add.input)
    assert sources == ["Conv", "DequantizeLinear"]
    conv = next(graph.producer[t] for t in add.input if graph.source(t) == "Conv")
    assert graph.consumers[conv.output[0]] == [add]
    assert graph.quantized_output(add)  # the next Q fuses too: the conv runs INT8 in and out

    batches = [(_images(4, seed),) for seed in range(1, 3)]
    two = _export(TwoConvResidual().eval(), batches, (_images(1, 7),), tmp_path)["graph"]
    (add,) = two.of("Add")
    assert sorted(two.source(t) for t in add.input) == ["Conv", "DequantizeLinear"]


# --- squeeze-excitation, pooling and gate multiplies ------------------------------------------


def test_average_pools_run_between_dq_and_q(graph):
    """[EQ] Q/DQ processing: average pooling is a quantizable layer, fused with its DQ input and
    Q output into one INT8 layer; a non-weighted INT8 layer needs an INT8 output."""
    pools = graph.of("GlobalAveragePool")
    assert len(pools) == 2 and not graph.of("ReduceMean")  # the SE's and the classifier's
    for pool in pools:
        assert graph.source(pool.input[0]) == "DequantizeLinear", pool.name
        assert graph.quantized_output(pool), pool.name


def test_se_multiply_has_dequantized_inputs_and_a_quantized_output(graph):
    """[EQ] placement recommendations: quantize non-commuting layers on inputs and output (a
    non-weighted layer with INT8 inputs needs an INT8 output), so DQ -> Mul -> Q fuses."""
    (mul,) = graph.of("Mul")
    assert [graph.source(t) for t in mul.input] == ["DequantizeLinear"] * 2
    assert graph.quantized_output(mul)
    dequantized = [graph.producer[t] for t in mul.input]
    (gate,) = [dq for dq in dequantized if graph.source(dq.input[0]) == "QuantizeLinear"
               and graph.source(graph.producer[dq.input[0]].input[0]) == "HardSigmoid"]  # fmt: skip
    # the gate keeps its fixed [0, 1] grid: s8, scale 1/127, zero point 0, so 0 and 1 are exact
    assert float(graph.scale(gate)) == pytest.approx(1 / 127, rel=1e-6)
    # the SE input is quantized once: the pooling and the multiply read the same DQ
    (se_input,) = [dq.output[0] for dq in dequantized if dq is not gate]
    assert {n.op_type for n in graph.consumers[se_input]} == {"GlobalAveragePool", "Mul"}


def test_each_tensor_is_quantized_once(graph):
    """[EQ] Q/DQ limitations: TensorRT's rewrites that merge or move Q/DQ compare scales and
    apply only when they are equal. Every quantizer of one tensor has the same scale, so the
    exported graph holds one Q per tensor (the block input's DQ feeds the expand conv and the
    skip of the residual add)."""
    read = defaultdict(int)
    for node in graph.of("QuantizeLinear"):
        read[node.input[0]] += 1
    assert max(read.values()) == 1, {t: k for t, k in read.items() if k > 1}
    (add,) = graph.of("Add")
    (skip,) = [t for t in add.input if graph.source(t) == "DequantizeLinear"]
    assert {n.op_type for n in graph.consumers[skip]} == {"Conv", "Add"}


def test_self_gated_activation_after_a_conv_gets_no_qdq_on_its_input(tmp_path):
    """[BP] point-wise fusion and conv + activation fusion: x * hardsigmoid(x) right after a
    conv fuses into it, so the conv output gets no Q/DQ of its own."""
    batches = [(_images(4, seed),) for seed in range(1, 3)]
    graph = _export(SelfGated().eval(), batches, (_images(1, 7),), tmp_path)["graph"]
    (mul,) = graph.of("Mul")
    conv = graph.of("Conv")[0]
    assert conv.output[0] in mul.input
    assert graph.quantized_output(mul)


def test_gated_attention_multiply_runs_between_dq_and_q(tmp_path):
    """[EQ] quantize non-commuting layers on inputs and output; Q/DQ propagation: Q and DQ move
    through Unsqueeze / Transpose / Reshape, which commute with them."""
    batches = [(_tokens(4, seed),) for seed in range(1, 3)]
    graph = _export(attention_net("gated"), batches, (_tokens(1, 7),), tmp_path)["graph"]
    gated = [
        m
        for m in graph.of("Mul")
        if any(graph.source(graph.behind_shape_ops(t)) == "DequantizeLinear" for t in m.input)
    ]
    assert len(gated) == 1
    (mul,) = gated
    assert all(graph.source(graph.behind_shape_ops(t)) == "DequantizeLinear" for t in mul.input)
    assert graph.quantized_output(mul)


# --- the fake-quant model, its twin and the ONNX file agree -----------------------------------


def test_fake_quant_twin_and_onnx_compute_the_same(mobile):
    """The rules change where quantizers sit, not what is computed: the brevitas model, its Q/DQ
    twin and ONNX Runtime on the shipped graph (Q/DQ run as written) agree."""
    x = _images(64, 99)
    with torch.no_grad():
        fake, twin = mobile["fake"](x), mobile["twin"](x)
    step = float(twin.abs().max()) / 127
    assert (fake - twin).abs().max().item() <= 3 * step + 1e-6
    added = [n for n, m in mobile["twin"].named_modules() if isinstance(m, QuantDequant)]
    assert any("trt_quant" in name for name in added)
    options = ort.SessionOptions()
    options.add_session_config_entry("session.disable_quant_qdq", "1")
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(mobile["path"]), options, providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    np.testing.assert_allclose(got, twin.numpy(), atol=1e-4 * max(1.0, float(twin.abs().max())))
