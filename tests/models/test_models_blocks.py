"""Gated building blocks: gates, SE, gated compression, attention variants, scan mixers."""

from __future__ import annotations

import pytest
import torch

from edgegate.models.blocks import (
    Attention,
    ClippedSoftmax,
    Gate,
    GatedCompression,
    GatedDeltaNetMixer,
    GLAMixer,
    HGRNMixer,
    SqueezeExcite,
    make_divisible,
)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize("kind", ["sigmoid", "hardsigmoid"])
def test_gate_kinds_range(kind: str) -> None:
    gate = Gate(kind)
    y = gate(torch.linspace(-10, 10, 101))
    assert gate.kind == kind and gate.role == "gate"
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    if kind == "hardsigmoid":  # reaches the ends exactly
        assert float(y.min()) == 0.0 and float(y.max()) == 1.0


def test_gate_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError):
        Gate("tanh")  # type: ignore[arg-type]


def test_make_divisible() -> None:
    assert make_divisible(72 / 4) == 24  # MobileNetV3 SE width for 72 expanded channels
    assert make_divisible(3) == 8
    assert make_divisible(36) == 40


@pytest.mark.parametrize("kind", ["sigmoid", "hardsigmoid"])
def test_squeeze_excite(kind: str) -> None:
    se = SqueezeExcite(48, gate=kind)
    assert se.fc1.out_channels == make_divisible(48 / 4, 8) == 16
    assert se.gate.kind == kind
    x = torch.randn(2, 48, 5, 5)
    y = se(x)
    scale = se.gate(se.fc2(se.act(se.fc1(se.pool(x)))))
    assert torch.allclose(y, x * scale)


def test_gated_compression_outputs_and_penalty() -> None:
    gc = GatedCompression(16)
    prob, z = gc(torch.randn(3, 16, 4, 4))
    assert prob.shape == (3,) and z.shape == (3, 16, 4, 4)
    assert ((prob >= 0) & (prob <= 1)).all()
    assert isinstance(gc.gate, Gate) and gc.gate.kind == "sigmoid"
    assert isinstance(gc.channel_gate, Gate) and gc.channel_gate.kind == "hardsigmoid"
    penalty = gc.l1_penalty()
    penalty.backward()
    assert gc.channel_logits.grad is not None and gc.channel_logits.grad.abs().sum() > 0
    assert gc.compression_ratio() == 1.0


def test_gated_compression_channels_reach_exact_zero() -> None:
    gc = GatedCompression(8)
    with torch.no_grad():
        gc.channel_logits[:6] = -4.0
    _, z = gc(torch.randn(2, 8, 3, 3))
    assert (z[:, :6] == 0).all() and (z[:, 6:] != 0).any()
    assert gc.compression_ratio() == pytest.approx(2 / 8)


def test_clipped_attention_outputs_exact_zero_probs() -> None:
    attn = Attention(32, 4, "clipped", gamma=-0.1)
    assert isinstance(attn.softmax, ClippedSoftmax)
    seen: list[torch.Tensor] = []
    attn.softmax.register_forward_hook(lambda m, i, o: seen.append(o))
    y = attn(torch.randn(2, 20, 32) * 3)
    assert y.shape == (2, 20, 32)
    probs = seen[0].detach()
    assert (probs == 0).any() and float(probs.max()) <= 1.0 and float(probs.min()) >= 0.0


def test_gated_attention_bias_init_and_gate_modules() -> None:
    for pi in (0.5, 0.25):
        attn = Attention(32, 4, "gated", pi_init=pi)
        gate = attn.head_gate
        assert gate is not None and isinstance(gate.gate, Gate)
        assert torch.allclose(torch.sigmoid(gate.proj.bias), torch.full((4,), pi))
        assert gate(torch.randn(2, 7, 32)).shape == (2, 4, 7, 1)


def test_gated_attention_gate_is_per_head_slice() -> None:
    """Head h's gate depends only on input slice h (Linear d_head -> 1 per head)."""
    attn = Attention(32, 4, "gated")
    x = torch.randn(1, 5, 32)
    x2 = x.clone()
    x2[..., 8:16] += 1.0  # change head 1's slice only
    g1, g2 = attn.head_gate(x), attn.head_gate(x2)
    changed = (g1 - g2).abs().amax(dim=(0, 2, 3))
    assert changed[1] > 0 and (changed[[0, 2, 3]] == 0).all()


def test_causal_attention_ignores_future() -> None:
    attn = Attention(32, 4, "softmax", causal=True).eval()
    x = torch.randn(1, 10, 32)
    y = attn(x)
    x2 = x.clone()
    x2[:, 6:] = torch.randn(1, 4, 32)
    assert torch.allclose(attn(x2)[:, :6], y[:, :6], atol=1e-6)


MIXERS = [
    lambda: GLAMixer(32, heads=2, gate_rank=8),
    lambda: HGRNMixer(32, heads=2),
    lambda: HGRNMixer(32, heads=2, lower_bound=0.3),
    lambda: GatedDeltaNetMixer(32, heads=2),
]


@pytest.mark.parametrize("make", MIXERS, ids=["gla", "hgrn", "hgrn-lb", "gdn"])
def test_mixer_streaming_equals_one_pass(make) -> None:  # noqa: ANN001
    mixer = make()
    x = torch.randn(2, 12, 32)
    y, state = mixer(x)
    assert state.shape == mixer.state_shape(2)
    y1, s1 = mixer(x[:, :5])
    y2, s2 = mixer(x[:, 5:], s1)
    assert torch.allclose(torch.cat([y1, y2], 1), y, atol=1e-5)
    assert torch.allclose(s2, state, atol=1e-5)
    y0, _ = mixer(x, mixer.init_state(2))
    assert torch.allclose(y0, y, atol=1e-6)


def test_gdn_gates() -> None:
    mixer = GatedDeltaNetMixer(32, heads=2)
    assert mixer.beta_gate.role == "scan"
    x = torch.randn(1, 4, 32)
    g = -torch.exp(mixer.A_log) * mixer.softplus(mixer.a_proj(x) + mixer.dt_bias)
    assert (g <= 0).all()
