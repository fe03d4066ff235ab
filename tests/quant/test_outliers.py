"""Quantizability statistics: kurtosis is right, outliers are flagged, attention gets the fix."""

from __future__ import annotations

import torch
from scipy import stats as scipy_stats
from torch import nn

from edgegate.models import build_model, example_inputs
from edgegate.quant.outliers import activation_stats


class Spiky(nn.Module):
    """Two parallel layers; a hook gives one of them rare, huge outliers."""

    def __init__(self) -> None:
        super().__init__()
        self.plain = nn.Linear(16, 16)
        self.spiky = nn.Linear(16, 16)

    def forward(self, x):
        return self.plain(x), self.spiky(x)


def test_kurtosis_matches_the_textbook_value_across_batches():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8))
    batches = [(torch.randn(64, 8),) for _ in range(4)]
    [entry] = activation_stats(model, batches)
    with torch.no_grad():
        outputs = torch.cat([model(*b) for b in batches]).flatten().double().numpy()
    assert abs(entry.kurtosis - scipy_stats.kurtosis(outputs, fisher=False)) < 1e-6
    assert abs(entry.max_abs - abs(outputs).max()) < 1e-5


def test_outlier_layer_is_flagged_and_plain_one_is_not():
    torch.manual_seed(0)
    model = Spiky()
    model.spiky.register_forward_hook(lambda m, i, o: o + (o.abs() > 2.0).float() * 200.0)
    stats = {s.name: s for s in activation_stats(model, [(torch.randn(256, 16),)])}
    assert stats["spiky"].flagged and stats["spiky"].max_abs > 150
    assert not stats["plain"].flagged


def test_attention_layers_know_their_variant():
    spec = "qvit:attention=softmax,depth=1"
    stats = activation_stats(build_model(spec), [example_inputs(spec, batch=4)])
    variants = {s.name: s.attention_variant for s in stats}
    assert variants["blocks.0.attn.qkv"] == "softmax"
    assert variants.get("head") is None
    assert all(s.weight_min is not None for s in stats if s.kind == "Linear")


def test_outliers_in_softmax_attention_suggest_the_gated_fix():
    spec = "qvit:attention=softmax,depth=1"
    model = build_model(spec)

    def one_huge_value_per_sample(module, inputs, out):
        out = out.clone()
        out[:, 0, 0] += 300.0  # the "attention sink" pattern: one token, one channel
        return out

    model.blocks[0].attn.proj.register_forward_hook(one_huge_value_per_sample)
    stats = {s.name: s for s in activation_stats(model, [example_inputs(spec, batch=8)])}
    flagged = stats["blocks.0.attn.proj"]
    assert flagged.flagged
    assert "clipped softmax or gated attention" in flagged.suggestion
