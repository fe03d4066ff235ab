"""Gated DeltaNet blocks (transformers' ``torch_chunk_gated_delta_rule``) become one
GatedDeltaRule: swapped models agree with the library's code at any length and batch, export
with both dynamic, and a form that disagrees with its block is left as traced code."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.export import Dim

pytest.importorskip("transformers", reason="the GDN recogniser swaps transformers' blocks")

from transformers import AutoModelForCausalLM  # noqa: E402

from edgegate.models.hf import CausalLMLogits  # noqa: E402
from edgegate.recognise.recurrences import gated_delta_rule as gdn  # noqa: E402
from edgegate.recognise.recurrences import swap_recurrences  # noqa: E402
from edgegate.recognise.recurrences.base import EdgegateForm  # noqa: E402
from tests.hf.tiny import qwen3_next_config  # noqa: E402

DYNAMIC = ({0: Dim("batch", min=1, max=8), 1: Dim("seq_len", min=1, max=256)},)
BLOCK = "model.model.layers.0.linear_attn"


def qwen3_next(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(
        qwen3_next_config(), attn_implementation="eager", experts_implementation="batched_mm"
    )
    return CausalLMLogits(model).eval()


def tokens(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 256, (batch, length), generator=torch.Generator().manual_seed(seed))


def relative(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).abs().max()) / float(want.abs().max())


def test_block_swapped_and_outputs_unchanged_at_any_length():
    lm = qwen3_next()
    inputs = {t: tokens(2, t) for t in (1, 37, 64, 130)}  # 1, odd, one chunk, past two chunks
    with torch.no_grad():
        before = {t: lm(x) for t, x in inputs.items()}
    report = swap_recurrences(lm, (inputs[37],))
    assert [(s.path, s.op) for s in report.swapped] == [(BLOCK, "GatedDeltaRule")]
    assert report.traced == []
    block = lm.get_submodule(BLOCK)
    assert isinstance(block, EdgegateForm) and type(block).__name__.endswith("GatedDeltaNet]")
    assert set(lm.state_dict()) == set(qwen3_next().state_dict())  # the block's own weights
    with torch.no_grad():
        for t, x in inputs.items():
            assert relative(lm(x), before[t]) < 1e-5, t


def test_export_keeps_batch_and_length_dynamic_with_one_scan_node():
    original, lm = qwen3_next(), qwen3_next()
    swap_recurrences(lm, (tokens(2, 37),))
    program = torch.export.export(lm, (tokens(2, 64),), dynamic_shapes=DYNAMIC, strict=False)
    scans = [n for n in program.graph.nodes if "edgegate.gated_delta_rule" in str(n.target)]
    assert len(scans) == 1
    assert not any("solve_triangular" in str(n.target) for n in program.graph.nodes)
    with torch.no_grad():
        for batch in (1, 3):
            for length in (1, 17, 200):
                x = tokens(batch, length, seed=length)
                assert relative(program.module()(x), original(x)) < 1e-5, (batch, length)


def test_grouped_heads_and_l2_norm_match_the_library_function():
    from transformers.models.qwen3_next import modeling_qwen3_next as library

    torch.manual_seed(0)
    q, k = torch.randn(2, 45, 2, 8), torch.randn(2, 45, 2, 8)
    v = torch.randn(2, 45, 4, 8)
    g, beta = -torch.rand(2, 45, 4), torch.rand(2, 45, 4)
    h0 = torch.randn(2, 4, 8, 8)
    want, want_state = library.torch_chunk_gated_delta_rule(
        q, k, v, g, beta, initial_state=h0, output_final_state=True, use_qk_l2norm_in_kernel=True
    )
    got, state = gdn.delta_rule(
        q, k, v, g, beta, initial_state=h0, output_final_state=True, use_qk_l2norm_in_kernel=True
    )
    assert relative(got, want) < 1e-5 and relative(state, want_state) < 1e-5


def test_a_form_that_disagrees_is_left_as_traced_code(monkeypatch):
    def wrong(*args, **kwargs):
        out, state = gdn.delta_rule(*args, **kwargs)
        return out * 1.5, state

    monkeypatch.setitem(gdn.GatedDeltaNetForm.replacements, "torch_chunk_gated_delta_rule", wrong)
    lm = qwen3_next()
    report = swap_recurrences(lm, (tokens(2, 37),))
    assert report.swapped == []
    [traced] = report.traced
    assert traced.path == BLOCK and "differs from the block" in traced.reason
    assert not isinstance(lm.get_submodule(BLOCK), EdgegateForm)


def test_an_unrecognised_recurrence_is_reported_as_traced():
    class MyRNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = nn.GRU(8, 8, batch_first=True)

        def forward(self, x):
            return self.cell(x)[0]

    report = swap_recurrences(nn.Sequential(nn.Linear(8, 8), MyRNN()), (torch.randn(2, 5, 8),))
    assert report.swapped == []
    assert [(t.path, t.what) for t in report.traced] == [("1", "MyRNN")]
    assert "exported as traced code" in report.traced[0].reason
