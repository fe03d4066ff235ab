"""Streaming `hf:` LMs: the step ``(tokens, *states) -> (logits, *new_states)`` drives
transformers' cache with the states as tensors. Fed a sequence in pieces (one token at a time
is a decode step), it equals one pass, in torch and as an exported ONNX graph in ONNX Runtime,
at batches and piece lengths other than the traced ones; with edgegate's scan ops in the graph.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from edgegate.errors import BadInput
from edgegate.exporters.onnx import auto_dynamic_shapes, export_onnx
from edgegate.models.hf import build_hf_model, parse_hf_spec
from edgegate.pipeline.recurrences import prepare_recurrences
from edgegate.runtime import OnnxRuntimeRunner
from tests.conftest import assert_one_line_error

LENGTH = 16
PIECES = {"5+1+1+9": [5, 6, 7], "decode": list(range(1, LENGTH))}
OPS = {"qwen3_next": "GatedDeltaRule", "mamba2": "GatedLinearAttention"}
ATOL = 1e-4


def _swapped(folder):
    lm = build_hf_model(parse_hf_spec(f"hf:{folder}"))
    report = prepare_recurrences(lm, (torch.randint(0, 256, (2, LENGTH)),))
    assert report.swapped and not report.traced
    return lm


@pytest.fixture(scope="module", params=sorted(OPS))
def family(request):
    return request.param, _swapped(request.getfixturevalue(f"{request.param}_dir"))


def _pieces(step, tokens, states, cuts):
    """Logits of ``tokens`` fed in pieces split at ``cuts``, every state carried."""
    edges = [0, *cuts, tokens.shape[1]]
    logits = []
    for start, stop in zip(edges[:-1], edges[1:], strict=True):
        out = step(tokens[:, start:stop], *states)
        logits.append(out[0])
        states = out[1:]
    return logits


@pytest.mark.parametrize("cuts", PIECES.values(), ids=PIECES.keys())
def test_torch_pieces_equal_one_pass(family, cuts):
    _, lm = family
    tokens = torch.randint(0, 256, (2, LENGTH), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = lm(tokens)
        pieces = torch.cat(_pieces(lm.streaming(), tokens, lm.init_states(2), cuts), 1)
    assert pieces.shape == full.shape
    torch.testing.assert_close(pieces, full, atol=ATOL, rtol=0)


def test_states_are_the_cache_layout(qwen3_next_dir, mamba2_dir):
    """Recurrent layers: conv [B, channels, kernel] and recurrent state; attention: keys and
    values whose length (dim 2) is dynamic, empty at a stream's start."""
    qwen = build_hf_model(parse_hf_spec(f"hf:{qwen3_next_dir}"))
    shapes = [tuple(s.shape) for s in qwen.init_states(3)]
    assert shapes == [(3, 128, 4), (3, 4, 16, 16), (3, 2, 0, 16), (3, 2, 0, 16)]
    assert qwen.state_dynamic_dims() == [(0,), (0,), (0, 2), (0, 2)]
    assert [s.shape[2] for s in qwen.example_states(2)[2:]] == [3, 3]  # non-empty past
    mamba = build_hf_model(parse_hf_spec(f"hf:{mamba2_dir}"))
    assert mamba.state_dynamic_dims() == [(0,)] * 4


def _export(lm, path):
    step = lm.streaming()
    states = lm.example_states(2)
    args = (torch.randint(0, 256, (2, 4)), *states)
    names = [f"state{i}" for i in range(len(states))]
    dims = [(0, 1), *lm.state_dynamic_dims()]
    export_onnx(
        step, args, path, input_names=["tokens", *names],
        output_names=["logits", *[f"new_{n}" for n in names]],
        dynamic_shapes=auto_dynamic_shapes(args, step, dims),
    )  # fmt: skip
    return names


def test_onnx_step_streams_in_onnxruntime(family, tmp_path):
    """Traced at batch 2, 4 tokens, past 3; run at batches 1 and 3, from an empty cache, in
    pieces of 5+1+1+9 tokens and one token at a time."""
    kind, lm = family
    path = tmp_path / "step.onnx"
    names = _export(lm, path)
    model = onnx.load(path)
    assert OPS[kind] in {n.op_type for n in model.graph.node}
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
            for i in model.graph.input}  # fmt: skip
    assert dims["tokens"] == ["batch", "seq_len"]
    if kind == "qwen3_next":
        assert dims["state2"] == ["batch", 2, "past_len", 16]
    runner = OnnxRuntimeRunner(str(path))
    for batch in (1, 3):
        tokens = torch.randint(0, 256, (batch, LENGTH), generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            full = lm(tokens).numpy()
        for cuts in PIECES.values():
            feed = {n: s.numpy() for n, s in zip(names, lm.init_states(batch), strict=True)}

            def step(piece, *states, feed=feed):
                out = runner.run({"tokens": piece.numpy(), **dict(zip(names, states, strict=True))})
                return out["logits"], *[out[f"new_{n}"] for n in names]

            got = np.concatenate(_pieces(step, tokens, tuple(feed.values()), cuts), 1)
            np.testing.assert_allclose(got, full, atol=ATOL, rtol=0)


def test_state_outside_the_cache_is_refused(recurrent_gemma_dir):
    lm = build_hf_model(parse_hf_spec(f"hf:{recurrent_gemma_dir}"))
    with pytest.raises(BadInput, match="outside transformers' cache"):
        lm.init_states(1)


def test_cli_streaming_refuses_recurrent_gemma(run_cli, recurrent_gemma_dir, small_text, tmp_path):
    result = run_cli(
        "quantize", f"hf:{recurrent_gemma_dir}", "--streaming", "--seq-len", "16",
        "--data", small_text, "-o", tmp_path / "out",
    )  # fmt: skip
    assert_one_line_error(result, "--streaming", "recurrent_gemma", "outside transformers' cache")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(OPS))
def test_cli_int8_streaming_export(run_cli, kind, request, small_text, tmp_path):
    """`quantize hf:... --streaming`: the INT8 step passes its judgement, and fed in pieces
    with states carried it equals itself run in one pass."""
    folder = request.getfixturevalue(f"{kind}_dir")
    out = tmp_path / "int8"
    result = run_cli(
        "quantize", f"hf:{folder}", "--streaming", "--seq-len", "32", "--data", small_text,
        "--calib-data", small_text, "--calib-samples", "8", "-o", out, "--json",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    summary = result.json()
    assert summary["passed"], summary["failures"]
    report = json.loads((out / "report.json").read_text())
    assert report["recurrences"]["swapped"] and not report["recurrences"]["traced"]
    declared = [r for part in summary["ranges"].values() for r in part["ranges"]]
    pasts = {(r["min"], r["max"]) for r in declared if r["name"] == "past_len"}
    if kind == "qwen3_next":  # a KV cache, declared from empty to the context, checked there
        assert pasts == {(0, 1024)}, declared
        assert all(1024 in r["checked"] for r in declared if r["name"] == "past_len")
    runner = OnnxRuntimeRunner(str(out / "model.int8.onnx"))
    specs = runner.input_specs()[1:]
    names = [s.name for s in specs]
    tokens = np.random.default_rng(0).integers(0, 256, (2, 24))

    def fresh():
        shapes = [[2 if d == "batch" else 0 if d == "past_len" else d for d in s.shape]
                  for s in specs]  # fmt: skip
        return tuple(np.zeros(shape, np.float32) for shape in shapes)

    def step(piece, *states):
        out = runner.run({"tokens": piece, **dict(zip(names, states, strict=True))})
        return out["logits"], *[out[f"new_{n}"] for n in names]

    one = step(tokens, *fresh())[0]
    for cuts in ([5, 6, 7], [10, 11, 12, 13]):
        got = np.concatenate(_pieces(step, tokens, fresh(), cuts), 1)
        np.testing.assert_allclose(got, one, atol=2e-3 * float(np.abs(one).max()), rtol=0)
