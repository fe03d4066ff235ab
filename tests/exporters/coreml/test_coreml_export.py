"""Core ML export pieces: shape ranges, scan regions kept fp32, ops coremltools lacks, int8
grid detection, and one converted package read back (ops, dtypes, ranges, metadata)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from torch import nn

from edgegate.exporters.coreml import export_coreml, prepare_program
from edgegate.exporters.coreml.convert import _on_int8_grid
from edgegate.exporters.coreml.inspect import load, op_counts, package_ranges
from edgegate.exporters.coreml.program import (
    bfloat16_nodes,
    broadcast_where_values,
    dim_ranges,
    export_program,
    routing_region,
    scan_region,
)
from edgegate.ops import gated_linear_attention

pytest.importorskip("coremltools", reason="coremltools not installed (pip install '.[coreml]')")


class TinyGLA(nn.Module):
    """A projection, a log-sigmoid gate and a GLA scan: what the scan LMs do, small."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(256, 16)
        self.qkvg = nn.Linear(16, 4 * 16)
        self.out = nn.Linear(16, 8)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        q, k, v, g = self.qkvg(x).unflatten(-1, (4, 2, 8)).unbind(2)
        o, _ = gated_linear_attention(q, k, v, nn.functional.logsigmoid(g))
        return self.out(o.flatten(2))


def test_dim_ranges_cover_batch_sequence_and_image_sides():
    tokens, image = torch.zeros(1, 64, dtype=torch.long), torch.zeros(1, 3, 32, 32)
    seq = dim_ranges([tokens], [(0, 1)], sequence=True)
    assert [(r.low, r.high) for r in seq] == [(1, 64), (1, 64)]
    img = dim_ranges([image], [(0, 2, 3)], sequence=False)
    assert [(r.dim, r.low, r.high) for r in img] == [(0, 1, 64), (2, 32, 512), (3, 32, 512)]


def test_scan_region_is_the_decomposed_scan_and_nothing_else():
    tokens = torch.randint(0, 256, (1, 16))
    program = export_program(
        TinyGLA().eval(), (tokens,), dim_ranges([tokens], [(0, 1)], sequence=True), 16
    )
    region = scan_region(program)
    targets = Counter(
        getattr(n.target, "_opname", str(n.target)) for n in program.graph.nodes if n.name in region
    )
    assert targets["cumsum"] == 1 and targets["exp"] >= 1, targets
    outside = {str(n.target) for n in program.graph.nodes if n.op == "call_function"} - {
        str(n.target) for n in program.graph.nodes if n.name in region
    }
    assert "aten.embedding.default" in outside
    cnn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Hardswish())
    image = torch.randn(1, 3, 32, 32)
    assert scan_region(export_program(cnn, (image,), [], 1)) == set()


def test_an_op_coreml_lacks_is_bad_input_before_conversion():
    from edgegate.errors import BadInput

    class FFT(nn.Module):
        def forward(self, x):
            return torch.fft.rfft(x).abs()

    with pytest.raises(BadInput, match="Core ML cannot take: aten._fft_r2c"):
        export_program(FFT(), (torch.randn(2, 16),), [], 1)


def test_int8_grid_detection():
    rng = np.random.default_rng(0)
    steps = rng.uniform(0.001, 0.1, size=(8, 1)).astype(np.float32)
    on_grid = rng.integers(-127, 128, size=(8, 27)) * steps
    on_grid[:, 0] = 127 * steps[:, 0]  # the largest magnitude sets the step
    assert _on_int8_grid(on_grid.astype(np.float32))
    assert _on_int8_grid(on_grid.astype(np.float16))  # fp16 rounding stays within tolerance
    assert not _on_int8_grid(rng.standard_normal((8, 27)).astype(np.float32))
    assert not _on_int8_grid(np.ones(27, dtype=np.float32))  # a bias, not a weight


def test_fp16_package_keeps_the_scan_in_fp32(tmp_path):
    torch.manual_seed(0)
    tokens = torch.randint(0, 256, (1, 24))
    program = prepare_program(TinyGLA().eval(), (tokens,), [(0, 1)], sequence=True)
    exported = export_coreml(
        program,
        tmp_path / "m.mlpackage",
        input_names=["tokens"],
        output_names=["logits"],
        precision="fp16",
        metadata={"model": "tiny", "part": "model"},
        input_docs={"tokens": "token ids"},
    )
    assert exported.fp32_ops > 0
    (spec_input,) = exported.inputs
    assert spec_input.name == "tokens" and spec_input.shape == ["batch", "seq_len"]
    assert package_ranges(exported.path) == {"tokens": {0: (1, 64), 1: (1, 24)}}
    model = load(exported.path)
    counts = op_counts(model)
    assert not [op for op in counts if "edgegate" in op]
    assert counts["cumsum"] == 1 and counts["cast"] >= 2
    program = model.get_spec().mlProgram.functions["main"]
    block = program.block_specializations[program.opset]
    cumsum = next(op for op in block.operations if op.type == "cumsum")
    linear_types = {
        op.outputs[0].type.tensorType.dataType for op in block.operations if op.type == "linear"
    }
    from coremltools.proto import MIL_pb2

    assert cumsum.outputs[0].type.tensorType.dataType == MIL_pb2.FLOAT32
    assert linear_types == {MIL_pb2.FLOAT16}
    assert model.author == "edgegate"
    assert model.user_defined_metadata["model"] == "tiny"
    assert model.input_description["tokens"] == "token ids"


class CausalMask(nn.Module):
    """Attention under a mask built as transformers builds it: ``where(causal [B,1,T,T], 0,
    min)``, a condition wider than both of its (scalar) values."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(256, 8)
        self.out = nn.Linear(8, 16)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        b, t = tokens.shape
        idx = torch.arange(t, device=tokens.device)
        causal = (idx[None, :] <= idx[:, None]).expand(b, 1, t, t)
        mask = torch.where(causal, torch.tensor(0.0), torch.tensor(torch.finfo(x.dtype).min))
        scores = x.unsqueeze(1) @ x.unsqueeze(1).transpose(-1, -2) + mask
        return self.out((scores.softmax(-1) @ x.unsqueeze(1)).squeeze(1))


def _where_values(program) -> list[tuple[int, ...]]:
    return [
        tuple(len(arg.meta["val"].shape) for arg in node.args)
        for node in program.graph.nodes
        if node.target == torch.ops.aten.where.self
    ]


def test_a_where_wider_than_its_values_gets_them_broadcast():
    """coremltools declares a select's type from its two values alone: the mask's first
    value is widened to the condition before conversion, and the program computes the same."""
    tokens = torch.randint(0, 256, (2, 12))
    module = CausalMask().eval()
    program = export_program(module, (tokens,), dim_ranges([tokens], [(0, 1)], sequence=True), 12)
    assert _where_values(program) == [(4, 4, 0)]
    assert broadcast_where_values(program) == 0  # already done, and once
    other = torch.randint(0, 256, (3, 7))
    torch.testing.assert_close(program.module()(other), module(other))

    class FullValues(nn.Module):  # values as wide as the condition: left alone
        def forward(self, x):
            return torch.where(x > 0, x, -x)

    plain = export_program(FullValues(), (torch.randn(2, 5),), [], 1)
    assert _where_values(plain) == [(2, 2, 2)]


def test_a_masked_lm_converts_with_the_declared_mask_shape(tmp_path):
    """The converted mask's select declares [B,1,T,T], and the emulated package agrees with
    PyTorch at lengths other than the traced one (it used to declare a scalar)."""
    from coremltools.proto import MIL_pb2

    from edgegate.runtime.coreml_emulator import Emulator

    torch.manual_seed(0)
    module = CausalMask().eval()
    tokens = torch.randint(0, 256, (2, 12))
    program = prepare_program(module, (tokens,), [(0, 1)], sequence=True)
    exported = export_coreml(
        program, tmp_path / "m.mlpackage", input_names=["tokens"], output_names=["out"]
    )
    function = load(exported.path).get_spec().mlProgram.functions["main"]
    block = function.block_specializations[function.opset]
    (select,) = [
        op
        for op in block.operations
        if op.type == "select" and op.outputs[0].type.tensorType.dataType != MIL_pb2.INT32
    ]
    assert select.outputs[0].type.tensorType.rank == 4
    assert select.outputs[0].type.tensorType.dataType == MIL_pb2.FLOAT16
    emulator = Emulator(exported.path)
    for shape in [(1, 1), (3, 5), (2, 12)]:
        feed = torch.randint(0, 256, shape)
        got = emulator.run({"tokens": feed.numpy().astype(np.int32)})["out"]
        np.testing.assert_allclose(got, module(feed).detach().numpy(), atol=2e-2, rtol=2e-2)


def test_bfloat16_buffers_are_exported_as_float32_and_left_as_they_were():
    """Core ML has no bfloat16: a model's bfloat16 buffer (RecurrentGemma's embedding scale)
    is widened, exactly, for the export only."""

    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 4)
            self.register_buffer("scale", torch.tensor(4**0.5 + 0.01, dtype=torch.bfloat16))

        def forward(self, x):
            return self.lin(x) * self.scale.type(x.dtype)

    module = Scaled().eval()
    x = torch.randn(2, 4)
    program = export_program(module, (x,), dim_ranges([x], [(0,)], sequence=False), 1)
    assert bfloat16_nodes(program) == []
    assert module.scale.dtype == torch.bfloat16
    torch.testing.assert_close(program.module()(x), module(x))

    class CastsItself(nn.Module):
        def forward(self, x):
            return (x.to(torch.bfloat16) * 2).float()

    from edgegate.errors import BadInput

    with pytest.raises(BadInput, match="computes in bfloat16"):
        export_program(CastsItself(), (x,), [], 1)


class TinyMoE(nn.Module):
    """A router (linear, softmax, top-2 of 4) mixing two of four expert projections."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(256, 8)
        self.gate = nn.Linear(8, 4, bias=False)
        self.experts = nn.Parameter(torch.randn(4, 8, 8) / 8**0.5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        weights, chosen = self.gate(x).softmax(-1).topk(2, dim=-1)
        picked = self.experts[chosen]  # [B, T, 2, 8, 8]
        y = (x[:, :, None, None, :] @ picked).squeeze(-2)  # [B, T, 2, 8]
        return (weights.unsqueeze(-1) * y).sum(2)


def test_an_moe_router_is_kept_fp32_and_nothing_else():
    """The router's matmul, softmax and top-k stay fp32 under fp16 (a flipped expert choice
    moves a token's output by far more than fp16 rounding); the experts do not."""
    tokens = torch.randint(0, 256, (2, 6))
    program = export_program(
        TinyMoE().eval(), (tokens,), dim_ranges([tokens], [(0, 1)], sequence=True), 6
    )
    region = routing_region(program)
    kinds = {str(n.target).split(".")[1] for n in program.graph.nodes if n.name in region}
    assert kinds - {"view"} == {"mm", "_softmax", "topk"}, kinds  # a 3-D linear: view, mm, view
    assert routing_region(export_program(CausalMask().eval(), (tokens,), [], 6)) == set()
