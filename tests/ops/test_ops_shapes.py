"""The public ops refuse a wrong argument layout at call time, naming the argument."""

from __future__ import annotations

import pytest
import torch

from edgegate.ops import gated_delta_rule, gated_linear_attention, gated_linear_scan


def _qkv(b=2, t=12, h=3, k=4, v=5):
    return torch.randn(b, t, h, k), torch.randn(b, t, h, k), torch.randn(b, t, h, v)


def test_delta_rule_gate_in_head_major_layout_is_refused():
    q, k, v = _qkv()
    g, beta = -torch.rand(2, 12, 3), torch.rand(2, 12, 3)
    with pytest.raises(ValueError, match=r"gated_delta_rule: g has length 3 where q has 12"):
        gated_delta_rule(q, k, v, g.transpose(1, 2), beta)
    with pytest.raises(ValueError, match=r"beta must be \[B,T,H\] \(3 dims\)"):
        gated_delta_rule(q, k, v, g, beta.unsqueeze(-1))
    with pytest.raises(ValueError, match=r"h0 has value dim 4 where v has 5"):
        gated_delta_rule(q, k, v, g, beta, torch.zeros(2, 3, 4, 4))
    out, state = gated_delta_rule(q, k, v, g, beta)
    assert out.shape == v.shape and state.shape == (2, 3, 4, 5)


def test_gla_accepts_per_head_and_per_key_gates_only():
    q, k, v = _qkv()
    gated_linear_attention(q, k, v, -torch.rand(2, 12, 3))
    gated_linear_attention(q, k, v, -torch.rand(2, 12, 3, 4))
    with pytest.raises(ValueError, match=r"g has key dim 5 where q has 4"):
        gated_linear_attention(q, k, v, -torch.rand(2, 12, 3, 5))
    with pytest.raises(ValueError, match=r"k has heads 2 where q has 3"):
        gated_linear_attention(q, k[:, :, :2], v, -torch.rand(2, 12, 3))


def test_linear_scan_gate_must_match_input():
    x = torch.randn(2, 7, 3, 4)
    with pytest.raises(ValueError, match=r"gated_linear_scan: g has batch 1 where x has 2"):
        gated_linear_scan(x, -torch.rand(1, 7, 3, 4))
    out, state = gated_linear_scan(x, -torch.rand(2, 7, 3, 4))
    assert out.shape == x.shape and state.shape == (2, 3, 4)
