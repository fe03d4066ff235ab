"""The gate-flip check: decisive gate values that cross 1/2 are counted, ties are not."""

from __future__ import annotations

import torch
from torch import nn

from edgegate.quant.calibrate import calibrate
from edgegate.quant.gate_check import gate_flips, gate_summary, gate_warnings
from edgegate.quant.graph import QuantConfig, quantize_model, trace
from edgegate.quant.profiles import get_profile
from tests.recognise.lookalikes import lookalike_net_hand_written


class _Gated(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc(x))


class _Inverted(nn.Module):
    """Stands in for a broken quantized model: its 'gate quantizer' inverts the gate."""

    def __init__(self, source: _Gated) -> None:
        super().__init__()
        self.fc = source.fc
        self.flip = _OneMinus()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.flip(torch.sigmoid(self.fc(x)))


class _OneMinus(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1.0 - x


def _batches() -> list[tuple[torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    return [(torch.randn(16, 8, generator=gen) * 4,) for _ in range(2)]


def test_an_inverted_gate_flips_on_every_decisive_value():
    model = _Gated().eval()
    gates = [{"path": "", "node": "sigmoid", "quantizer": "flip"}]
    result = gate_flips(trace(model), _Inverted(model).eval(), gates, _batches())
    assert result[0]["flip_rate"] == 100.0
    assert result[0]["max_abs_error"] > 0.9


def test_a_quantized_model_keeps_its_gate_decisions():
    model = lookalike_net_hand_written()
    qmodel = quantize_model(model, QuantConfig(get_profile("onnxruntime")))
    batches = [
        (torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(i)),) for i in range(3)
    ]
    calibrate(qmodel, batches)
    summary = gate_summary(trace(model), qmodel, batches)
    assert len(summary["recognised"]) == 5
    assert all(gate["flip_rate"] <= 1.0 for gate in summary["recognised"])
    assert all(gate["max_abs_error"] < 0.05 for gate in summary["recognised"])
    warnings = gate_warnings(summary)
    assert len(warnings) == 1 and "HandWrittenSE at blocks.4.se" in warnings[0]


def test_weight_only_profiles_record_gates_without_quantizers_or_flips():
    model = lookalike_net_hand_written()
    qmodel = quantize_model(model, QuantConfig(get_profile("coreml")))
    summary = gate_summary(trace(model), qmodel, [(torch.randn(2, 3, 32, 32),)])
    assert [gate["quantizer"] for gate in summary["recognised"]] == [None] * 5
    assert summary["max_flip_rate"] is None
