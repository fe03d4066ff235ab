"""Custom ops: one node per call under torch.export with symbolic B and T, eager parity."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.export import Dim

import edgegate.ops as ops

H, K, V = 2, 4, 3


class ScanNet(nn.Module):
    """HGRN-style: x = (1 - f) * i, g = logsigmoid(f); carries a state in and out."""

    def __init__(self, c: int = 6) -> None:
        super().__init__()
        self.proj = nn.Linear(c, 2 * H * K)

    def forward(self, x: torch.Tensor, h0: torch.Tensor):
        B, T, _ = x.shape
        i, f = self.proj(x).reshape(B, T, H, 2 * K).chunk(2, dim=-1)
        return ops.gated_linear_scan((1 - torch.sigmoid(f)) * i, F.logsigmoid(f), h0)


class GLANet(nn.Module):
    def __init__(self, vector_gate: bool, c: int = 6) -> None:
        super().__init__()
        self.gk = K if vector_gate else 1
        self.proj = nn.Linear(c, H * (2 * K + V + self.gk))

    def forward(self, x: torch.Tensor):
        B, T, _ = x.shape
        z = self.proj(x).reshape(B, T, H, -1)
        q, k, v, g = z.split([K, K, V, self.gk], dim=-1)
        g = F.logsigmoid(g) / 16
        return ops.gated_linear_attention(q, k, v, g if self.gk > 1 else g.squeeze(-1))


class DeltaNet(nn.Module):
    def __init__(self, c: int = 6) -> None:
        super().__init__()
        self.proj = nn.Linear(c, H * (2 * K + V + 2))

    def forward(self, x: torch.Tensor, h0: torch.Tensor):
        B, T, _ = x.shape
        q, k, v, a, b = self.proj(x).reshape(B, T, H, -1).split([K, K, V, 1, 1], dim=-1)
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        g = -F.softplus(a.squeeze(-1))
        return ops.gated_delta_rule(q, k, v, g, torch.sigmoid(b.squeeze(-1)), h0)


class SoftmaxNet(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = x @ x.transpose(-1, -2)
        return ops.clipped_softmax(scores, gamma=-0.03, zeta=1.0, dim=-1) @ x


CASES = {
    "gated_linear_scan": (lambda: ScanNet(), "vector"),
    "gated_linear_attention": (lambda: GLANet(vector_gate=True), None),
    "gated_linear_attention_scalar": (lambda: GLANet(vector_gate=False), None),
    "gated_delta_rule": (lambda: DeltaNet(), "matrix"),
    "clipped_softmax": (lambda: SoftmaxNet(), None),
}


def _inputs(state: str | None, B: int, T: int):
    gen = torch.Generator().manual_seed(B * 100 + T)
    x = torch.randn(B, T, 6, generator=gen)
    if state == "vector":
        return x, torch.randn(B, H, K, generator=gen)
    if state == "matrix":
        return x, torch.randn(B, H, K, V, generator=gen)
    return (x,)


@pytest.mark.parametrize("name", list(CASES))
def test_export_keeps_one_node_with_dynamic_t(name):
    torch.manual_seed(0)
    make, state = CASES[name]
    model = make().eval()
    args = _inputs(state, 2, 5)
    dyn = ({0: Dim.AUTO, 1: Dim.AUTO},) + (({0: Dim.AUTO},) if state else ())
    ep = torch.export.export(model, args, dynamic_shapes=dyn)

    op_name = name.removesuffix("_scalar")
    target = getattr(torch.ops.edgegate, op_name).default
    ours = [
        n
        for n in ep.graph.nodes
        if isinstance(n.target, torch._ops.OpOverload) and n.target.namespace == "edgegate"
    ]
    assert [n.target for n in ours] == [target]
    out_meta = ours[0].meta["val"]
    out_meta = out_meta[0] if isinstance(out_meta, tuple) else out_meta
    assert isinstance(out_meta.shape[1], torch.SymInt), out_meta.shape  # T stays symbolic
    x_meta = next(n for n in ep.graph.nodes if n.op == "placeholder" and n.name == "x").meta["val"]
    assert all(isinstance(d, torch.SymInt) for d in x_meta.shape[:2]), x_meta.shape

    runner = ep.module()
    for B, T in [(2, 5), (3, 70), (1, 1)]:
        a = _inputs(state, B, T)
        got, want = runner(*a), model(*a)
        got, want = (got, want) if isinstance(got, tuple) else ((got,), (want,))
        assert len(got) == len(want)
        for g_, w_ in zip(got, want, strict=True):
            torch.testing.assert_close(g_, w_, rtol=1e-5, atol=1e-5)


def _op_args(name: str, T: int = 5, dtype: torch.dtype = torch.float64, B: int = 2):
    gen = torch.Generator().manual_seed(7)

    def r(*shape):
        return torch.randn(*shape, generator=gen, dtype=dtype)

    if name == "gated_linear_scan":
        return (r(B, T, H, K), -torch.rand(B, T, H, K, generator=gen, dtype=dtype), r(B, H, K))
    if name == "gated_linear_attention":
        g = -torch.rand(B, T, H, K, generator=gen, dtype=dtype)
        return (r(B, T, H, K), r(B, T, H, K), r(B, T, H, V), g, r(B, H, K, V), 0.5)
    if name == "gated_delta_rule":
        k = F.normalize(r(B, T, H, K), dim=-1)
        g = -torch.rand(B, T, H, generator=gen, dtype=dtype)
        beta = torch.rand(B, T, H, generator=gen, dtype=dtype)
        return (r(B, T, H, K), k, r(B, T, H, V), g, beta, None, 0.5)
    return (r(B, T, 9), -0.01, 1.2, -1)


OPS = ["gated_linear_scan", "gated_linear_attention", "gated_delta_rule", "clipped_softmax"]


@pytest.mark.parametrize("name", OPS)
def test_opcheck(name):
    op = getattr(torch.ops.edgegate, name).default
    args = tuple(a.requires_grad_() if isinstance(a, torch.Tensor) else a for a in _op_args(name))
    torch.library.opcheck(
        op, args, test_utils=("test_schema", "test_autograd_registration", "test_faketensor")
    )


@pytest.mark.parametrize("name", OPS)
def test_custom_op_gradients(name):
    """The registered backward (recompute under autograd) gives the true gradient."""
    op = getattr(torch.ops.edgegate, name).default
    args = list(_op_args(name, T=4, B=1))
    idx = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]

    def fn(*ts):
        full = list(args)
        for i, t in zip(idx, ts, strict=True):
            full[i] = t
        return op(*full)

    inputs = tuple(args[i].requires_grad_() for i in idx)
    assert torch.autograd.gradcheck(fn, inputs, fast_mode=True)


def test_custom_op_empty_sequence_does_not_alias_h0():
    x, g, h0 = _op_args("gated_linear_scan", T=0, dtype=torch.float32)
    y, h = torch.ops.edgegate.gated_linear_scan(x, g, h0)
    assert y.shape[1] == 0 and torch.equal(h, h0)
    assert h.data_ptr() != h0.data_ptr()
