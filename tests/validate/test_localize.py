"""`validate --localize`: first-divergence localisation mapped back to the torch module.

The perturbation tests change one weight initializer, picked at random (the seed is printed
so a failure can be replayed with EDGEGATE_LOCALIZE_SEED), and check that localisation names
the module holding that weight.
"""

from __future__ import annotations

import os
import random
import shutil
import sys

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from edgegate.exporters.onnx import export_onnx
from edgegate.manifest import read_manifest, sha256_file, write_manifest
from edgegate.models import load_model
from edgegate.validate.localize import (
    INT8_LAYER_STEPS,
    index_graph,
    localize,
    node_scopes,
    owner,
    torch_layer_outputs,
)


def _seed() -> int:
    seed = int(os.environ.get("EDGEGATE_LOCALIZE_SEED", random.randrange(2**31)))
    print(f"perturbation seed: {seed} (replay with EDGEGATE_LOCALIZE_SEED={seed})", file=sys.stderr)
    return seed


# --- a tiny hand-made module, exported with the dynamo exporter ----------------------------


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 6)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.act(self.fc(x))


class Tiny(nn.Module):
    """Conv + BatchNorm (the exporter folds them into one node), a residual block, a head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.act = nn.Hardswish()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.proj = nn.Linear(4, 6)
        self.block = Block()
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pool(self.act(self.bn(self.conv(x)))).flatten(1)
        return self.head(self.block(self.proj(y)))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    module = Tiny().eval()
    with torch.no_grad():  # a BatchNorm that does something, so folding it matters
        module.bn.running_mean.uniform_(-0.5, 0.5)
        module.bn.running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    export_onnx(module, (torch.randn(2, 3, 8, 8),), path, input_names=["x"], output_names=["y"])
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype("float32")
    return module, path, {"x": x}


def _perturbed(path, tmp_path, name: str, delta: float):
    model = onnx.load(path)
    init = next(t for t in model.graph.initializer if t.name == name)
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + delta, name))
    out = tmp_path / "perturbed.onnx"
    onnx.save(model, out)
    return out


def test_scopes_are_module_paths_without_the_op_name(tiny):
    _, path, _ = tiny
    index = index_graph(onnx.load(path))
    scopes = {node.op_type: node_scopes(node) for node in index.nodes}
    assert scopes["Relu"] == ("block", "block.act")
    assert scopes["Add"] == ("block",)
    assert owner("block.fc.weight", {"block", "block.fc"}) == "block.fc"
    assert owner("features.0.0.weight_int", {"features.0.0"}) == "features.0.0"
    assert owner("val_3", {"block"}) is None


def test_unperturbed_tiny_maps_every_module_within_tolerance(tiny):
    module, path, feed = tiny
    found = localize(module, path, feed, feed, "fp32")
    by_module = {layer.module: layer for layer in found.layers}
    assert set(by_module) == {
        "conv", "bn", "act", "pool", "proj", "block.fc", "block.act", "block", "head"
    }  # fmt: skip
    assert found.first_divergent is None
    # conv has no node of its own: folded into bn's Conv, judged on bn's output
    assert by_module["conv"].fused_into == "bn"
    assert by_module["conv"].onnx_node == by_module["bn"].onnx_node
    assert by_module["block"].onnx_node.startswith("node_add")  # the residual, not the Relu
    order = [layer.module for layer in found.layers]
    assert order.index("block.fc") < order.index("block.act") < order.index("block")


@pytest.mark.parametrize(
    "weight, module",
    [("block.fc.weight", "block.fc"), ("conv.weight", "conv"), ("head.bias", "head")],
)
def test_perturbed_tiny_weight_names_its_module(tiny, tmp_path, weight, module):
    reference, path, feed = tiny
    found = localize(reference, _perturbed(path, tmp_path, weight, 0.5), feed, feed, "fp32")
    first = found.first_divergent
    assert first is not None and first.module == module, [
        (la.module, la.max_abs, la.allowed) for la in found.layers
    ]
    assert first.max_abs > first.allowed


def test_a_module_run_twice_has_no_single_value():
    act = nn.ReLU()
    module = nn.Sequential(nn.Linear(3, 3), act, nn.Linear(3, 3), act)
    out = torch_layer_outputs(module, (torch.randn(2, 3),), {"0", "1", "2", "3"})
    assert list(out) == ["0", "2"]  # "1" and "3" are one module, called twice


# --- mobilenet-v3-se, fp32 ----------------------------------------------------------------


@pytest.fixture(scope="module")
def fp32_export(tmp_path_factory):
    from edgegate.cli import main

    out = tmp_path_factory.mktemp("loc") / "fp32"
    assert main(["export", "mobilenet-v3-se", "--input-size", "32", "-o", str(out)]) == 0
    return out


def _rewrite(directory, name: str, change) -> None:
    """Apply ``change`` to the model file's initializer ``name`` and re-record its hash."""
    manifest = read_manifest(directory)
    path = directory / manifest.extra["model_file"]
    model = onnx.load(path)
    init = next(t for t in model.graph.initializer if t.name == name)
    init.CopyFrom(numpy_helper.from_array(change(numpy_helper.to_array(init)), name))
    onnx.save(model, path)
    manifest.files[path.name] = sha256_file(path)
    write_manifest(directory, manifest)


def test_fp32_export_localizes_every_layer_within_tolerance(fp32_export, run_cli):
    result = run_cli("validate", fp32_export, "--localize", "--json", "--parity-samples", "8")
    assert result.code == 0, result.stderr
    loc = result.json()["localization"]
    assert loc["first_divergent"] is None
    assert len(loc["layers"]) > 50 and not any(layer["diverged"] for layer in loc["layers"])


def test_fp32_perturbed_weight_names_the_module_holding_it(fp32_export, tmp_path, run_cli):
    seed = _seed()
    rng = np.random.default_rng(seed)
    params = dict(load_model("mobilenet-v3-se").module.named_parameters())
    model = onnx.load(fp32_export / "model.onnx")
    # an initializer named like a parameter: the weights of convs and linears (BatchNorm's
    # are folded into the conv before it, whose initializer keeps the conv's name)
    names = sorted(t.name for t in model.graph.initializer if t.name in params)
    name = names[rng.integers(len(names))]
    expected = name.rsplit(".", 1)[0]
    directory = tmp_path / "perturbed"
    shutil.copytree(fp32_export, directory)

    def noise(w: np.ndarray) -> np.ndarray:
        spread = max(float(np.abs(w).max()), 0.05)
        return (w + rng.normal(0.0, spread, w.shape)).astype(w.dtype)

    _rewrite(directory, name, noise)
    result = run_cli("validate", directory, "--localize", "--json", "--parity-samples", "8")
    assert result.code == 1, (name, result.stderr)
    first = result.json()["localization"]["first_divergent"]
    assert first is not None and first["module"] == expected, (seed, name, first)


def test_human_output_names_the_first_divergent_module(fp32_export, tmp_path, run_cli):
    directory = tmp_path / "perturbed"
    shutil.copytree(fp32_export, directory)
    _rewrite(directory, "features.1.block.1.fc1.weight", lambda w: w + np.float32(0.5))
    result = run_cli("validate", directory, "--parity-samples", "8")  # parity fails: automatic
    assert result.code == 1
    assert "first divergent module" in result.stdout
    assert "features.1.block.1.fc1" in result.stdout


# --- mobilenet-v3-se, INT8 ----------------------------------------------------------------


@pytest.fixture(scope="module")
def int8_export(mobilenet_int8):
    """The shared `quantize mobilenet-v3-se` export (tests/conftest.py); copied before edits."""
    return mobilenet_int8


def test_int8_perturbed_weight_names_the_module_holding_it(int8_export, tmp_path, run_cli):
    """Fake-quant torch vs the Q/DQ graph run as written. Unperturbed, rounding flips leave
    every layer within a few steps (at most about 3 on the digits test rows); a weight moved
    by 8 to 24 of its int8 steps puts its layer's output many steps off."""
    unperturbed = run_cli("validate", int8_export, "--localize", "--json", "--parity-samples", "8")
    assert unperturbed.code == 0, unperturbed.stderr
    loc = unperturbed.json()["localization"]
    assert loc["first_divergent"] is None, loc["first_divergent"]
    assert max(layer["steps"] or 0 for layer in loc["layers"]) <= INT8_LAYER_STEPS

    seed = _seed()
    rng = np.random.default_rng(seed)
    model = onnx.load(int8_export / "model.int8.onnx")
    names = sorted(t.name for t in model.graph.initializer if t.name.endswith(".weight_int"))
    name = names[rng.integers(len(names))]
    expected = name.rsplit(".", 1)[0]
    directory = tmp_path / "perturbed"
    shutil.copytree(int8_export, directory)

    def steps(w: np.ndarray) -> np.ndarray:
        moved = w.astype(np.int32) + rng.choice([-1, 1], w.shape) * rng.integers(8, 25, w.shape)
        return np.clip(moved, -127, 127).astype(w.dtype)

    _rewrite(directory, name, steps)
    result = run_cli("validate", directory, "--localize", "--json", "--parity-samples", "8")
    assert result.code in (0, 1), result.stderr
    first = result.json()["localization"]["first_divergent"]
    assert first is not None and first["module"] == expected, (seed, name, first)


# --- which graph: the target registry says -------------------------------------------------


@pytest.mark.parametrize(
    "target, inspectable",
    [("onnx", True), ("onnxruntime", True), ("tensorrt", True), ("coreml", False),
     ("executorch", False)],
)  # fmt: skip
def test_targets_say_which_graph_localisation_inspects(target, inspectable, tmp_path):
    from edgegate.pipeline.artifacts import Artifact
    from edgegate.pipeline.validate import localization
    from edgegate.targets import get_target

    chosen = get_target(target)
    path = tmp_path / chosen.file_name("model")
    assert (chosen.inspectable_onnx(path) == path) is inspectable
    if not inspectable:  # skipped before any file is read
        art = Artifact(path, None, None, chosen)
        skipped = localization(art, nn.Identity(), {}, {})["skipped"]
        assert f"target '{target}'" in skipped and "not an ONNX graph" in skipped


def test_a_graph_without_torch_scopes_is_not_localizable(tmp_path):
    from onnx import TensorProto, helper

    from edgegate.validate.localize import NotLocalizable

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "plain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
    )
    path = tmp_path / "plain.onnx"
    onnx.save(helper.make_model(graph), path)
    feed = {"x": np.ones((1, 3), "float32")}
    with pytest.raises(NotLocalizable, match="name_scopes"):
        localize(nn.ReLU(), path, feed, feed, "fp32")
