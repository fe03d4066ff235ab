"""The recognisers and BN folding on the real torchvision and timm SE networks.

They run wherever torchvision imports (in this project's venv it does not: its wheel is built
for another torch, and timm imports torchvision); elsewhere they skip with the import's reason.
"""

from __future__ import annotations

import pytest
import torch
from brevitas.nn import QuantIdentity

from edgegate.models import load_model, vision
from edgegate.quant.graph import QuantConfig, quantize_model, trace
from edgegate.quant.profiles import get_profile
from edgegate.recognise import recognise

pytestmark = pytest.mark.slow

# gates per network: one SE block each, every one recognised by its class
NETWORKS = {
    "torchvision:mobilenet_v3_large": (8, "class torchvision.ops.misc.SqueezeExcitation"),
    "torchvision:mobilenet_v3_small": (9, "class torchvision.ops.misc.SqueezeExcitation"),
    "timm:efficientnet_b0": (16, "class timm.models._efficientnet_blocks.SqueezeExcite"),
    "timm:mobilenetv3_large_100": (8, "class timm.models._efficientnet_blocks.SqueezeExcite"),
}


@pytest.mark.parametrize("spec", list(NETWORKS))
def test_every_se_gate_gets_a_fixed_quantizer_and_every_batch_norm_folds(spec):
    library = spec.split(":")[0]
    failure = vision.import_failure(library)
    if failure:
        pytest.skip(f"{library} does not import here: {failure}")
    gates, matched_by = NETWORKS[spec]
    model = load_model(f"{spec}:num_classes=10").module.eval()
    recognition = recognise(trace(model))
    assert recognition.counts() == {"squeeze_excitation": gates}
    assert {item.matched_by for item in recognition.found} == {matched_by}
    assert recognition.warned == []
    qmodel = quantize_model(model, QuantConfig(get_profile("onnxruntime")))
    names = [name for name, m in qmodel.named_modules() if isinstance(m, QuantIdentity)]
    assert sum(name.endswith("_gate_quant") for name in names) == gates
    left = [
        node
        for node in qmodel.graph.nodes
        if "batch_norm" in str(node.target)
        or isinstance(dict(qmodel.named_modules()).get(node.target), torch.nn.BatchNorm2d)
    ]
    assert left == []
