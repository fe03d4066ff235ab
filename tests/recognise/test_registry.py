"""The recogniser registry: SE blocks however they are written, gates, and what is left out."""

from __future__ import annotations

import pytest
import torch
from torch import fx, nn

from edgegate.models import build_model
from edgegate.models.blocks.scans import LinearScan
from edgegate.quant.graph import trace
from edgegate.recognise import Recogniser, recognise, recognisers, register
from tests.recognise.lookalikes import lookalike_net, lookalike_net_hand_written

SE_PATHS = ["blocks.0.se", "blocks.1.se", "blocks.2.se", "blocks.3.se"]


def _by_path(recognition) -> dict[str, dict]:
    return {item.path: item.to_dict() for item in recognition.found}


def test_lookalike_se_blocks_are_recognised_by_class_or_pattern():
    recognition = recognise(trace(lookalike_net()))
    found = _by_path(recognition)
    assert [item.path for item in recognition.found] == [*SE_PATHS, ""]
    assert all(found[path]["family"] == "squeeze_excitation" for path in SE_PATHS)
    assert found["blocks.1.se"]["matched_by"] == "class torchvision.ops.misc.SqueezeExcitation"
    assert found["blocks.0.se"]["matched_by"].startswith("pattern AdaptiveAvgPool2d -> Conv2d")
    assert found["blocks.2.se"]["matched_by"].startswith("pattern mean")  # timm's x.mean
    assert [found[p]["kind"] for p in SE_PATHS] == [
        "hardsigmoid",
        "sigmoid",
        "sigmoid",
        "hardsigmoid",
    ]
    assert found[""]["family"] == "elementwise_gate"  # x * torch.sigmoid(...), a function
    assert recognition.warned == []


def test_a_gate_block_no_recogniser_reads_is_warned_by_name():
    recognition = recognise(trace(lookalike_net_hand_written()))
    assert [(item.path, item.what) for item in recognition.warned] == [
        ("blocks.4.se", "HandWrittenSE")
    ]


def test_aten_graphs_of_an_exported_program_are_recognised_alike():
    model = lookalike_net()
    program = torch.export.export(model, (torch.randn(2, 3, 32, 32),))
    exported = recognise(program.module())
    traced = recognise(trace(model))
    assert [(f.path, f.family, f.kind) for f in exported.found] == [
        (f.path, f.family, f.kind) for f in traced.found
    ]
    assert "conv2d -> relu -> conv2d -> hardsigmoid" in exported.found[0].matched_by


@pytest.mark.parametrize(
    ("spec", "families"),
    [
        ("mobilenet-v3-se", {"squeeze_excitation": 9}),
        ("gc-mobilenet", {"squeeze_excitation": 9, "gate": 1}),
        ("qvit:attention=gated", {"attention_softmax": 4, "gate": 4}),
        ("hgrn-lm", {"elementwise_gate": 6}),
        ("gdn-lm", {"elementwise_gate": 3}),
    ],
)
def test_zoo_gates_are_recognised_and_nothing_is_warned(spec, families):
    recognition = recognise(trace(build_model(spec).eval()))
    assert recognition.counts() == families
    assert recognition.warned == []


def test_gc_channel_gate_is_a_constant_and_left_float_without_a_warning():
    recognition = recognise(trace(build_model("gc-mobilenet").eval()))
    left = [item for item in recognition.leftovers if not item.warn]
    assert [item.path for item in left] == ["stage1.gc.channel_gate"]
    assert "no input" in left[0].reason


def test_gdn_beta_gate_feeds_the_scan_and_is_not_a_gate_output():
    recognition = recognise(trace(build_model("gdn-lm").eval()))
    assert not any("beta" in item.path for item in recognition.found)


class _ScanInputGate(nn.Module):
    """A sigmoid gate on a scan's input: the scan region stays float, by design."""

    def __init__(self) -> None:
        super().__init__()
        self.x_proj, self.g_proj, self.z_proj = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4)
        self.scan = LinearScan()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gated = self.x_proj(x) * torch.sigmoid(self.z_proj(x))
        g = nn.functional.logsigmoid(self.g_proj(x))
        y, _ = self.scan(gated[:, :, None], g[:, :, None])
        return y[:, :, 0]


class _Odd(nn.Module):
    """A constant gate, a sigmoid added (not multiplied), and a sigmoid model output."""

    def __init__(self) -> None:
        super().__init__()
        self.mask = nn.Parameter(torch.zeros(4))
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.fc(x * torch.sigmoid(self.mask)) + torch.sigmoid(x)
        return y, torch.sigmoid(y)


def test_scan_inputs_constants_and_outputs_are_left_alone_with_reasons():
    scan = recognise(trace(_ScanInputGate()))
    assert scan.found == [] and scan.warned == []
    assert [item.reason for item in scan.leftovers] == [
        "feeds a scan: kept float with the scan's inputs"
    ]
    odd = recognise(trace(_Odd()))
    assert odd.found == []
    reasons = sorted((item.warn, item.reason.split(":")[0]) for item in odd.leftovers)
    assert reasons == [
        (False, "a model output, not a gate"),
        (False, "depends on no input"),
        (True, "its output multiplies no tensor"),
    ]


def test_registration_order_is_claim_order_and_families_are_unique():
    families = [recogniser.family for recogniser in recognisers()]
    assert families[0] == "squeeze_excitation" and families[-1] == "gate"

    class Duplicate(Recogniser):
        family = "squeeze_excitation"
        becomes = "nothing"

        def find(self, graph_module: fx.GraphModule, candidates):
            return []

    with pytest.raises(ValueError, match="registered already"):
        register(Duplicate())
