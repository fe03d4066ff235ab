"""Streaming scan LMs in `edgegate.quant`: states as graph inputs, calibrated over whole
sequences fed in pieces (the state carried), and quantized only when the profile says so."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from edgegate.models.lm import gla_lm
from edgegate.quant.calibrate import calibrate, calibrate_streaming, piece_bounds
from edgegate.quant.graph import QuantConfig, quantize_model
from edgegate.quant.profiles import get_profile
from edgegate.quant.qdq import tensor_quant


@settings(max_examples=60, deadline=None)
@given(length=st.integers(1, 600), pieces=st.integers(1, 9), shift=st.integers(0, 10_000))
def test_pieces_cover_the_sequence_in_order(length, pieces, shift):
    bounds = piece_bounds(length, pieces, shift)
    assert bounds[0][0] == 0 and bounds[-1][1] == length
    assert all(a < b for a, b in bounds)
    assert all(b == c for (_, b), (c, _) in zip(bounds[:-1], bounds[1:], strict=True))
    assert len(bounds) <= pieces + 1


def test_successive_shifts_cut_at_every_position():
    cuts = {a for shift in range(1, 7 * 64, 7) for a, _ in piece_bounds(128, 4, shift)}
    assert cuts == set(range(32)) | set(range(32, 128))  # every position starts some piece


def _lm():
    torch.manual_seed(0)
    lm = gla_lm(depth=2, dim=32, heads=2).eval()
    with torch.no_grad():  # larger keys and values than the init: states of a trained size
        for block in lm.blocks:
            block.mixer.k_proj.weight.mul_(4)
            block.mixer.v_proj.weight.mul_(4)
    return lm


def _state_range(qmodel, name):
    quant = tensor_quant(qmodel.get_submodule(f"{name}_state_quant").act_quant)
    return quant.scale * (quant.qmin - quant.zero_point), quant.scale * (
        quant.qmax - quant.zero_point
    )


@torch.no_grad()
def test_state_inputs_are_ranged_on_states_reached_mid_sequence():
    """The state quantizer's range covers the states a stream reaches (measured here at every
    position), where calibrating one pass from zero states would see zeros only."""
    lm = _lm()
    tokens = torch.randint(0, 256, (8, 64), generator=torch.Generator().manual_seed(1))
    config = QuantConfig(get_profile("onnxruntime:x86-vnni", quantize_state=True))
    streamed = quantize_model(lm.streaming(), config)
    calibrate_streaming(streamed, [(tokens[:4],), (tokens[4:],)], lm.streaming(), lm.init_states)
    reached = []
    states = lm.init_states(8)
    for t in range(64):  # the state after every prefix
        out = lm.forward_with_state(tokens[:, t : t + 1], *states)
        states = out[1:]
        reached.append(states)
    for i in range(2):
        low, high = _state_range(streamed, f"state{i}")
        values = torch.stack([s[i] for s in reached])
        assert high - low >= 0.8 * float(values.max() - values.min()), (low, high)
        assert low <= float(values.min()) * 0.5 and high >= float(values.max()) * 0.5

    # the contrast: one pass from zero states, as feed-forward calibration would do it
    one_pass = quantize_model(lm.streaming(), config)

    class FromZeros(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = one_pass

        def forward(self, x):
            return self.model(x, *lm.init_states(len(x)))[0]

    calibrate(FromZeros(), [(tokens[:4],), (tokens[4:],)])
    low, high = _state_range(one_pass, "state0")
    assert high - low < 0.1 * float(torch.stack([s[0] for s in reached]).abs().max())


def test_states_stay_float_unless_the_profile_quantizes_them():
    lm = _lm()
    names = {
        n
        for n, _ in quantize_model(
            lm.streaming(), QuantConfig(get_profile("tensorrt"))
        ).named_modules()
    }
    assert not [n for n in names if n.endswith("_state_quant")]
    quantized = quantize_model(
        lm.streaming(), QuantConfig(get_profile("tensorrt", quantize_state=True))
    )
    assert {n for n, _ in quantized.named_modules() if n.endswith("_state_quant")} == {
        "state0_state_quant",
        "state1_state_quant",
    }
    assert get_profile("tensorrt").state_bits is None


def test_streaming_graph_equals_the_lm_in_pieces():
    """Before any quantizer: the traced streaming step is the LM's forward_with_state."""
    lm = _lm()
    graph = quantize_model(lm.streaming(), QuantConfig(get_profile("coreml")))  # weights only
    tokens = torch.randint(0, 256, (2, 20))
    with torch.no_grad():
        first = graph(tokens[:, :7], *lm.init_states(2))
        second = graph(tokens[:, 7:], *first[1:])
        whole = graph(tokens, *lm.init_states(2))
    torch.testing.assert_close(torch.cat([first[0], second[0]], 1), whole[0], atol=1e-5, rtol=0)
    with pytest.raises(TypeError):
        graph(tokens)  # the states are required inputs of the streaming graph
