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
    dim_ranges,
    export_program,
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
