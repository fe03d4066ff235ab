"""Quantization report: per-layer SQNR is right, flags follow it, and the files are complete."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from edgegate.models.blocks.attention import Attention
from edgegate.quant.calibrate import calibrate
from edgegate.quant.graph import QuantConfig, quantize_model
from edgegate.quant.profiles import get_profile
from edgegate.quant.report import (
    LOW_SQNR_SUGGESTION,
    ROW_KEYS,
    SQNR_CEILING_DB,
    SQNR_LIMIT_DB,
    layer_sqnr,
    quantizability_report,
    sqnr_db,
    write_quant_report,
)

# the report's figures are about the first conv, which reads the image: quantize it too
CONFIG = QuantConfig(replace(get_profile("onnxruntime"), float_image_stem=False), "minmax")


def conv_model() -> nn.Sequential:
    """Conv-BN-ReLU-Linear with a BN far from identity, so folding changes the conv output."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 8 * 8, 10),
    )
    bn = model[1]
    bn.running_mean.uniform_(-1.0, 1.0)
    bn.running_var.uniform_(0.5, 2.0)
    bn.weight.data.uniform_(2.0, 5.0)
    bn.bias.data.uniform_(-3.0, 3.0)
    return model.eval()


class AttentionModel(nn.Module):
    def __init__(self, variant: str = "softmax") -> None:
        super().__init__()
        self.inp = nn.Linear(8, 16)
        self.attn = Attention(dim=16, heads=2, variant=variant)
        self.out = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.attn(self.inp(x)))


def image_batches(n: int = 3, seed: int = 1) -> list[tuple[torch.Tensor, ...]]:
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 3, 8, 8, generator=gen),) for _ in range(n)]


def token_batches(n: int = 3, seed: int = 1) -> list[tuple[torch.Tensor, ...]]:
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(4, 6, 8, generator=gen),) for _ in range(n)]


def quantized(model: nn.Module, calibration) -> nn.Module:
    qmodel = quantize_model(model, CONFIG)
    calibrate(qmodel, calibration)
    return qmodel


def quant_layer_names(qmodel: nn.Module) -> set[str]:
    from brevitas.nn import QuantConv1d, QuantConv2d, QuantLinear

    return {
        name
        for name, m in qmodel.named_modules()
        if isinstance(m, QuantConv1d | QuantConv2d | QuantLinear)
    }


@pytest.fixture(scope="module")
def conv_pair():
    model = conv_model()
    return model, quantized(model, image_batches(seed=1))


def test_sqnr_guards_are_finite():
    assert sqnr_db(1.0, 0.0) == SQNR_CEILING_DB
    assert sqnr_db(0.0, 0.0) == SQNR_CEILING_DB
    assert sqnr_db(0.0, 1.0) == -SQNR_CEILING_DB
    assert sqnr_db(100.0, 1.0) == pytest.approx(20.0)


def test_every_quantized_layer_has_a_good_finite_sqnr(conv_pair):
    model, qmodel = conv_pair
    sqnr = layer_sqnr(model, qmodel, image_batches(2, seed=2))
    assert set(sqnr) == quant_layer_names(qmodel) == {"0", "4"}
    for value in sqnr.values():
        assert math.isfinite(value) and value > 10.0, sqnr
    # "0" is conv with BN folded in: compared with the float conv alone (pre-BN) it would
    # sit far below 0 dB, so this also checks the reference is the BN output
    assert sqnr["0"] > SQNR_LIMIT_DB


def test_attention_model_sqnr_covers_its_quantized_layers():
    model = AttentionModel().eval()
    qmodel = quantized(model, token_batches(seed=1))
    sqnr = layer_sqnr(model, qmodel, token_batches(2, seed=2))
    assert set(sqnr) == quant_layer_names(qmodel) >= {"inp", "attn.qkv", "attn.proj", "out"}
    assert all(math.isfinite(v) and v > 10.0 for v in sqnr.values()), sqnr


def test_identical_models_hit_the_ceiling(conv_pair):
    _, qmodel = conv_pair
    sqnr = layer_sqnr(qmodel, qmodel, image_batches(1, seed=2))
    assert sqnr and all(v == SQNR_CEILING_DB for v in sqnr.values())


def test_an_outlier_in_calibration_lowers_sqnr_and_gets_flagged(conv_pair):
    model, good = conv_pair
    spoiled = [(x.clone(),) for (x,) in image_batches(seed=1)]
    spoiled[0][0][0, 0, 0, 0] = 1e3  # one huge input value stretches the minmax range 100x
    bad = quantized(model, spoiled)
    evaluation = image_batches(2, seed=2)
    good_sqnr = layer_sqnr(model, good, evaluation)
    bad_sqnr = layer_sqnr(model, bad, evaluation)
    assert bad_sqnr["0"] < good_sqnr["0"] - 10.0, (good_sqnr, bad_sqnr)
    assert bad_sqnr["0"] < SQNR_LIMIT_DB
    rows = {row["name"]: row for row in quantizability_report(model, bad, evaluation)}
    assert rows["0"]["flagged"] and rows["0"]["suggestion"] == LOW_SQNR_SUGGESTION
    good_rows = {row["name"]: row for row in quantizability_report(model, good, evaluation)}
    assert not good_rows["0"]["flagged"] and good_rows["0"]["suggestion"] is None


@pytest.mark.parametrize("variant", ["softmax", "gated"])
def test_report_rows_cover_every_layer(variant):
    model = AttentionModel(variant).eval()
    qmodel = quantized(model, token_batches(seed=1))
    rows = quantizability_report(model, qmodel, iter(token_batches(2, seed=2)))
    by_name = {row["name"]: row for row in rows}
    expected = {
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d | Attention)
    }
    assert set(by_name) == expected and len(rows) == len(expected)
    assert all(tuple(row) == ROW_KEYS for row in rows)
    assert by_name["attn"]["sqnr_db"] is None and not by_name["attn"]["quantized"]
    for name in quant_layer_names(qmodel):
        assert by_name[name]["quantized"] and by_name[name]["sqnr_db"] is not None
    if variant == "gated":  # a Conv1d: quantized, but outside activation_stats
        assert by_name["attn.head_gate.proj"]["quantized"]
        assert by_name["attn.head_gate.proj"]["kind"] == "Conv1d"


def test_low_sqnr_keeps_the_attention_suggestion():
    model = AttentionModel().eval()
    qmodel = quantized(model, token_batches(seed=1))

    def attention_sink(_module, _inputs, out):
        out = out.clone()
        out[:, 0, 0] += 300.0  # float model only: the quantized twin cannot follow it
        return out

    model.attn.proj.register_forward_hook(attention_sink)
    rows = {row["name"]: row for row in quantizability_report(model, qmodel, token_batches(2))}
    proj = rows["attn.proj"]
    assert proj["sqnr_db"] < SQNR_LIMIT_DB and proj["flagged"]
    assert "gated attention" in proj["suggestion"]
    assert LOW_SQNR_SUGGESTION not in proj["suggestion"]


def test_write_quant_report_produces_three_consistent_files(tmp_path, conv_pair):
    model, qmodel = conv_pair
    rows = quantizability_report(model, qmodel, image_batches(2, seed=2))
    summary = {"profile": "onnxruntime", "method": "minmax", "layers": len(rows)}
    paths = write_quant_report(rows, tmp_path / "out", summary)
    names = sorted(p.name for p in paths)
    assert names == ["quant_report.json", "quant_report.md", "quant_report.png"]
    assert all(p.exists() and p.parent == tmp_path / "out" for p in paths)
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]

    loaded = json.loads((tmp_path / "out" / "quant_report.json").read_text())
    assert loaded == {"summary": summary, "layers": rows}

    markdown = (tmp_path / "out" / "quant_report.md").read_text()
    layer_section = markdown.split("## Layers", 1)[1]
    table = [line for line in layer_section.splitlines() if line.startswith("|")]
    assert table[0].startswith("| layer | kind | max abs | kurtosis | weight range | SQNR dB")
    assert len(table) - 2 == len(rows)  # header + separator, then one line per layer
    for row, line in zip(rows, table[2:], strict=True):
        assert f"`{row['name']}`" in line and f"{row['sqnr_db']:.1f}" in line
    assert "| method | minmax |" in markdown

    png = (tmp_path / "out" / "quant_report.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")


def test_png_grows_with_the_layer_count(tmp_path):
    def rows(n: int) -> list[dict]:
        return [
            dict.fromkeys(ROW_KEYS)
            | {"name": f"block{i}.fc", "sqnr_db": 15.0 + i % 30, "flagged": i % 30 < 5}
            for i in range(n)
        ]

    small = write_quant_report(rows(3), tmp_path / "small", {})[2].read_bytes()
    large = write_quant_report(rows(60), tmp_path / "large", {})[2].read_bytes()

    def png_height(data: bytes) -> int:
        return int.from_bytes(data[20:24], "big")  # IHDR: width at 16, height at 20

    assert png_height(large) > 3 * png_height(small)
