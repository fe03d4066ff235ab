"""`.pt2` programs as plain FX graphs: layers become modules, and the graph computes what the
program computes, at every batch size it takes."""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path

import pytest
import torch
from brevitas.nn import QuantConv1d, QuantConv2d, QuantLinear
from torch import fx, nn

from edgegate.errors import BadInput
from edgegate.models import build_model, example_inputs, load_model
from edgegate.models.blocks.attention import ClippedSoftmax
from edgegate.models.checkpoint import ExportedModule, ReexportFailed, export_failure
from edgegate.quant.calibrate import calibrate
from edgegate.quant.exported import plain_graph_module
from edgegate.quant.graph import SCAN_TYPES, KeepFloat, QuantConfig, quantize_model, trace
from edgegate.quant.profiles import get_profile
from tests.quant.tiny_models import tiny_cnn

BATCHES = (1, 2, 3, 5, 8)


class GatedCNN(nn.Module):
    """conv-BN-ReLU, a stride-2 conv-BN, a sigmoid SE gate, a hard-sigmoid gate, a Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=2)
        self.bn2 = nn.BatchNorm2d(16)
        self.se_reduce = nn.Conv2d(16, 4, 1)
        self.se_expand = nn.Conv2d(4, 16, 1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.bn2(self.conv2(x))
        squeezed = torch.relu(self.se_reduce(x.mean((2, 3), keepdim=True)))
        x = x * torch.sigmoid(self.se_expand(squeezed))
        x = x * nn.functional.hardsigmoid(x)
        return self.fc(x.mean((2, 3)))


class GatedLM(nn.Module):
    """int64 tokens [B, T] -> logits [B, T, 64]: embedding, a sigmoid-gated projection with a
    residual add, a LayerNorm, a Linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(64, 16)
        self.norm = nn.LayerNorm(16)
        self.value = nn.Linear(16, 16)
        self.gate = nn.Linear(16, 16)
        self.head = nn.Linear(16, 64)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens)
        h = h + self.value(self.norm(h)) * torch.sigmoid(self.gate(h))
        return self.head(h)


class SharedWeight(nn.Module):
    """A conv whose weight is read again elsewhere: folding its BN must not change that read."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm1d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x)) + self.conv.weight.sum()


def _seeded(model: nn.Module) -> nn.Module:
    """Eval mode, BatchNorm statistics far from identity (folding must visibly matter)."""
    torch.manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.2, 0.2)
    return model.eval()


def _save(
    tmp: Path, name: str, model: nn.Module, example: torch.Tensor, dims: dict, decomposed=False
) -> Path:
    program = torch.export.export(model, (example,), dynamic_shapes=(dims,))
    if decomposed:  # what a user gets after run_decompositions(): convolution, addmm, ...
        program = program.run_decompositions()
    path = tmp / f"{name}.pt2"
    torch.export.save(program, path)
    return path


@pytest.fixture(scope="module")
def programs(tmp_path_factory) -> dict[str, tuple[nn.Module, ExportedModule]]:
    """name -> (the eager model, its .pt2 as edgegate loads it)."""
    tmp = tmp_path_factory.mktemp("pt2")
    batch = torch.export.Dim("batch", min=1, max=16)
    seq = torch.export.Dim("seq", min=2, max=64)
    torch.manual_seed(0)
    cnn, lm, shared = _seeded(GatedCNN()), GatedLM().eval(), _seeded(SharedWeight())
    zoo_like = tiny_cnn()
    image, tokens = torch.randn(2, 3, 16, 16), torch.randint(0, 64, (2, 12))
    saved = {
        "cnn": (cnn, _save(tmp, "cnn", cnn, image, {0: batch})),
        "cnn-decomposed": (cnn, _save(tmp, "cnn_d", cnn, image, {0: batch}, decomposed=True)),
        "tiny-cnn": (zoo_like, _save(tmp, "tiny", zoo_like, image, {0: batch})),
        "lm": (lm, _save(tmp, "lm", lm, tokens, {0: batch, 1: seq})),
        "lm-decomposed": (lm, _save(tmp, "lm_d", lm, tokens, {0: batch, 1: seq}, True)),
        "shared": (shared, _save(tmp, "shared", shared, torch.randn(2, 4, 9), {0: batch})),
    }
    return {name: (eager, load_model(str(path)).module) for name, (eager, path) in saved.items()}


def _inputs(name: str, batch: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if name.startswith("lm"):
        return torch.randint(0, 64, (batch, 3 + 7 * seed % 40), generator=gen)
    if name == "shared":
        return torch.randn(batch, 4, 9, generator=gen)
    return torch.randn(batch, 3, 16, 16, generator=gen)


@pytest.mark.parametrize(
    "name", ["cnn", "cnn-decomposed", "tiny-cnn", "lm", "lm-decomposed", "shared"]
)
def test_plain_graph_computes_what_the_program_computes(programs, name):
    eager, program = programs[name]
    plain = plain_graph_module(program)
    with torch.no_grad():
        for seed, batch in enumerate(BATCHES):
            x = _inputs(name, batch, seed)
            want = program(x)
            got = plain(x)
            assert got.shape == want.shape
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(got, eager(x), rtol=1e-4, atol=1e-4)


def _module_types(graph_module: fx.GraphModule) -> Counter[str]:
    modules = dict(graph_module.named_modules())
    return Counter(
        type(modules[n.target]).__name__ for n in graph_module.graph.nodes if n.op == "call_module"
    )


def _aten_left(graph_module: fx.GraphModule) -> set[str]:
    return {
        str(n.target).split(".")[1]
        for n in graph_module.graph.nodes
        if n.op == "call_function" and str(n.target).startswith("aten.")
    }


@pytest.mark.parametrize("name", ["cnn", "cnn-decomposed"])
def test_layers_become_modules_with_plain_inputs(programs, name):
    plain = plain_graph_module(programs[name][1])
    types = _module_types(plain)
    assert types["Conv2d"] == 4 and types["BatchNorm2d"] == 2 and types["Linear"] == 1
    assert types["Sigmoid"] == 1 and types["Hardsigmoid"] == 1
    left = _aten_left(plain)
    for op in ("conv2d", "convolution", "batch_norm", "linear", "addmm", "sigmoid", "relu"):
        assert not any(name.startswith(op) for name in left), left
    assert {"mean", "mul"} <= left  # what no module stands for stays as the program's aten call
    placeholders = [n.target for n in plain.graph.nodes if n.op == "placeholder"]
    assert placeholders == ["x"] and "pytree" not in plain.code
    # layers are named after the modules that held their weights
    assert {"conv1", "bn1", "conv2", "bn2", "se_reduce", "se_expand", "fc"} <= set(
        dict(plain.named_children())
    )


def test_weights_are_copies(programs):
    program = programs["cnn"][1]
    plain = plain_graph_module(program)
    with torch.no_grad():
        plain.conv1.weight.mul_(0)
    assert program.inner.conv1.weight.abs().sum() > 0


def test_lm_linears_and_gate_become_modules(programs):
    for name in ("lm", "lm-decomposed"):
        types = _module_types(plain_graph_module(programs[name][1]))
        assert types["Linear"] == 3 and types["Sigmoid"] == 1, (name, types)


def test_a_weight_read_elsewhere_keeps_its_own_value_after_folding(programs):
    eager, program = programs["shared"]
    graph_module = trace(program)
    assert _module_types(graph_module)["BatchNorm1d"] == 1
    children = dict(graph_module.named_children())  # the layer steps aside for the read
    assert isinstance(children["conv_1"], nn.Conv1d) and type(children["conv"]) is nn.Module
    x = torch.randn(3, 4, 9)
    qmodel = quantize_model(program, QuantConfig(get_profile("tensorrt")))
    assert not any(isinstance(m, nn.BatchNorm1d) for m in qmodel.modules())
    assert any(isinstance(m, QuantConv1d) for m in qmodel.modules())
    calibrate(qmodel, [(torch.randn(8, 4, 9),)])
    with torch.no_grad():  # the folded conv is quantized; the weight sum reads the original
        torch.testing.assert_close(qmodel(x), eager(x), rtol=0.05, atol=0.05)


@pytest.mark.parametrize("profile", ["onnxruntime", "tensorrt"])
def test_quantize_model_folds_bn_and_quantizes_the_layers(programs, profile):
    eager, program = programs["cnn"]
    qmodel = quantize_model(program, QuantConfig(get_profile(profile)))
    modules = list(qmodel.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in modules)
    # under onnxruntime the image stem stays float (quant.graph.image_stems)
    stems = int(get_profile(profile).float_image_stem)
    assert sum(isinstance(m, QuantConv2d) for m in modules) == 4 - stems
    assert sum(isinstance(m, QuantLinear) for m in modules) == 1
    gen = torch.Generator().manual_seed(3)
    calibrate(qmodel, [(torch.randn(8, 3, 16, 16, generator=gen),) for _ in range(2)])
    x = torch.randn(4, 3, 16, 16, generator=gen)
    with torch.no_grad():
        want, got = eager(x), qmodel(x)
    cosine = nn.functional.cosine_similarity(want.flatten(), got.flatten(), dim=0)
    assert cosine > 0.99, float(cosine)


def test_the_program_guards_stay(programs):
    program = programs["cnn"][1]
    plain = plain_graph_module(program)
    assert program.max_batch == plain.max_batch == 16
    qmodel = quantize_model(program, QuantConfig(get_profile("tensorrt")))
    assert qmodel.max_batch == copy.deepcopy(qmodel).max_batch == 16  # edgegate feeds within
    too_many = torch.randn(17, 3, 16, 16)
    for module in (program, plain):  # both refuse a batch the program was not exported for
        with pytest.raises(AssertionError, match="Guard failed"):
            module(too_many)


def test_nested_inputs_are_a_bad_input(tmp_path):
    class Pair(nn.Module):
        def forward(self, pair: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
            return pair[0] + pair[1]

    path = tmp_path / "pair.pt2"
    x = torch.randn(2, 3)
    torch.export.save(torch.export.export(Pair(), ((x, x),)), path)
    with pytest.raises(BadInput, match="nested inputs"):
        plain_graph_module(load_model(str(path)).module)


def test_a_failed_reexport_of_a_program_is_edgegates_failure_not_a_bad_input(programs):
    assert isinstance(export_failure(programs["cnn"][1], "torch.export failed"), ReexportFailed)
    assert isinstance(export_failure(GatedCNN(), "torch.export failed"), BadInput)


@pytest.mark.parametrize("spec", ["gla-lm:depth=1", "gdn-lm:depth=1", "qlm:attention=clipped"])
def test_a_zoo_program_keeps_the_eager_models_float_layers(tmp_path, spec):
    """Scan ops become the scan modules (their projections stay float, as in the eager model)
    and softmaxes become modules; the quantized program then has the eager model's layers."""
    torch.manual_seed(0)
    eager = build_model(spec).eval()
    (tokens,) = example_inputs(spec, batch=2)
    path = tmp_path / "zoo.pt2"
    dims = ({0: torch.export.Dim.AUTO},)
    torch.export.save(torch.export.export(eager, (tokens,), dynamic_shapes=dims), path)
    program = load_model(str(path)).module
    plain = plain_graph_module(program)
    torch.testing.assert_close(plain(tokens), program(tokens), rtol=1e-5, atol=1e-5)

    def layers(model: nn.Module) -> Counter[str]:
        kinds = (QuantLinear, KeepFloat, ClippedSoftmax, *SCAN_TYPES)
        return Counter(
            next(k.__name__ for k in kinds if isinstance(m, k))
            for m in model.modules()
            if isinstance(m, kinds)
        )

    config = QuantConfig(get_profile("onnxruntime"))
    from_program, from_eager = quantize_model(program, config), quantize_model(eager, config)
    assert layers(from_program) == layers(from_eager)
    assert layers(from_program)["KeepFloat"] > 0 or spec.startswith("qlm")
