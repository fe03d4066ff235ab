"""Core ML emulator vs torch eager: real conversions (ct.convert of exported programs), flexible
shapes at several sizes, fp16 rounding visible, int8 weights, and unsupported ops named."""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgegate.errors import BadInput
from edgegate.models import build_model, load_model
from edgegate.ops.decompose import decompose

ct = pytest.importorskip("coremltools")

from edgegate.runtime.coreml_emulator import (  # noqa: E402
    Emulator,
    UnsupportedMILOp,
    evaluate,
    supported_ops,
    unsupported_ops,
)

logging.getLogger("coremltools").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", module="coremltools")

Dim = torch.export.Dim
FP32_TOL = 1e-4  # of the output scale (max |reference|)
FP16_TOL = 2e-2


def export_program(
    module: nn.Module,
    example: tuple[torch.Tensor, ...],
    dynamic_shapes: Any = None,
    max_len: int = 128,
) -> torch.export.ExportedProgram:
    """Exported and decomposed as edgegate's Core ML target does (core aten, loop-free scans)."""
    ep = torch.export.export(module.eval(), example, dynamic_shapes=dynamic_shapes)
    return decompose(ep, max_len=max_len)


def to_mlprogram(ep: torch.export.ExportedProgram, precision: Any = "fp32", target: Any = None):
    """`precision`: 'fp32', 'fp16' or a ct.transform.FP16ComputePrecision."""
    if isinstance(precision, str):
        precision = {"fp32": ct.precision.FLOAT32, "fp16": ct.precision.FLOAT16}[precision]
    return ct.convert(
        ep,
        convert_to="mlprogram",
        minimum_deployment_target=target or ct.target.iOS17,
        compute_precision=precision,
    )


def convert(
    module: nn.Module,
    example: tuple[torch.Tensor, ...],
    dynamic_shapes: Any = None,
    *,
    precision: Any = "fp32",
    target: Any = None,
):
    return to_mlprogram(export_program(module, example, dynamic_shapes), precision, target)


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(1234)


def torch_outputs(module: nn.Module, *inputs: torch.Tensor) -> list[np.ndarray]:
    with torch.no_grad():
        out = module(*inputs)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    return [o.detach().float().numpy() for o in outs]


def rel_error(got: np.ndarray, ref: np.ndarray) -> float:
    """max |got - ref| over the output scale max |ref|."""
    assert got.shape == ref.shape, (got.shape, ref.shape)
    scale = max(float(np.abs(ref).max()), 1e-6)
    return float(np.abs(got.astype(np.float64) - ref).max()) / scale


def run_both(
    emu: Emulator, module: nn.Module, inputs: Sequence[torch.Tensor]
) -> list[tuple[np.ndarray, np.ndarray]]:
    names = [s.name for s in emu.input_specs()]
    out = emu.run({n: t.numpy() for n, t in zip(names, inputs, strict=True)})
    refs = torch_outputs(module, *inputs)
    assert len(out) == len(refs)
    return list(zip(out.values(), refs, strict=True))


def assert_close(pairs: list[tuple[np.ndarray, np.ndarray]], tol: float) -> list[float]:
    errors = [rel_error(got, ref) for got, ref in pairs]
    assert max(errors) <= tol, errors
    return errors


# ---- small modules, one per op family ------------------------------------------------------


class ConvSE(nn.Module):
    """conv + BN + hardswish, depthwise conv, squeeze-excite, pooling, linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish()
        )
        self.dw = nn.Sequential(
            nn.Conv2d(16, 16, 3, 1, 2, dilation=2, groups=16), nn.BatchNorm2d(16), nn.ReLU()
        )
        self.se = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(16, 8, 1),
            nn.ReLU(),
            nn.Conv2d(8, 16, 1),
            nn.Hardsigmoid(),
        )
        self.pw = nn.Conv2d(16, 24, 1)
        self.head = nn.Linear(24, 5)
        for bn in (self.stem[1], self.dw[1]):  # non-trivial running statistics
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.data.uniform_(0.5, 1.5)
            bn.bias.data.uniform_(-0.2, 0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dw(self.stem(x))
        y = y * self.se(y)
        y = F.max_pool2d(self.pw(y), 3, 2, 1) + F.avg_pool2d(self.pw(y), 3, 2, 1)
        return self.head(y.mean(dim=(2, 3)))


class SeqModel(nn.Module):
    """embedding, layer_norm, causal softmax attention, gelu MLP, then a gated scan in
    loop-free form (cumsum of log-gates, exp of masked differences, matmul)."""

    def __init__(self, vocab: int = 50, dim: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.embed = nn.Embedding(vocab, dim)
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 64), nn.GELU(), nn.Linear(64, dim))
        self.gate = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm(x)).view(b, t, 3, self.heads, d // self.heads).unbind(2)
        q, k, v = (z.transpose(1, 2) for z in (q, k, v))
        scores = q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5
        causal = torch.ones(t, t, dtype=torch.bool).tril()
        scores = scores.masked_fill(~causal, float("-inf"))
        y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(y)
        return x + self.mlp(x)

    def scan(self, x: torch.Tensor) -> torch.Tensor:
        log_a = F.logsigmoid(self.gate(x)).transpose(1, 2)  # [B, D, T]
        cum = torch.cumsum(log_a, dim=-1)
        t = x.shape[1]
        mask = torch.arange(t).unsqueeze(1) >= torch.arange(t).unsqueeze(0)
        diff = torch.where(mask, cum.unsqueeze(-1) - cum.unsqueeze(-2), torch.zeros(()) - 1e4)
        v = F.silu(self.value(x)).transpose(1, 2).unsqueeze(-1)  # [B, D, T, 1]
        return (torch.exp(diff) @ v).squeeze(-1).transpose(1, 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.attention(self.embed(tokens))
        return x + self.scan(x)


class Ops(nn.Module):
    """Unary, binary, activation, reduction, shape, gather/scatter, sort, norm and resize ops,
    one output each: x, y [B, 6, 10]; img [B, 4, 6, 6]; idx [B, 5] in [0, 6)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1)

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, img: torch.Tensor, idx: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        return self.elementwise(x, y) + self.indexing(img, idx)

    def elementwise(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        pos = x.abs() + 0.5
        return (
            torch.tanh(x) + torch.erf(y),
            F.elu(x) * F.leaky_relu(y, 0.1) + F.softplus(x) - (3 * y).clamp(0.0, 6.0),
            torch.rsqrt(pos) + torch.pow(pos, 1.7) + torch.log(pos) + torch.sqrt(pos),
            torch.sin(x) * torch.cos(y) + torch.atan(x) + torch.exp(-pos),
            torch.floor(3 * x) + torch.ceil(2 * y) + torch.sign(x) + (y + 2) / pos,
            torch.maximum(x, y) - torch.minimum(x, y) + x.clamp(-0.5, 0.3),
            torch.where(x > y, x / pos, y * pos),
            F.gelu(x) + F.silu(y) + torch.sigmoid(x) - torch.tanh(y),
            x.sum(-1) + x.mean(1).sum(-1, keepdim=True) + x.amax(-1) - y.amin(-1),
            torch.logsumexp(x, dim=-1) + torch.linalg.vector_norm(y, dim=-1),
            x.argmax(-1).to(torch.int32),
            torch.log_softmax(x, dim=1) + y.softmax(dim=-1),
            torch.cumsum(x, dim=2).flip(1),
            torch.topk(x, 3, dim=-1).values,
            torch.cat([x, y], dim=1)[:, ::2, 1:-1],
            F.pad(x, (1, 2), mode="reflect") + F.pad(y, (1, 2), mode="replicate"),
            F.max_pool1d(x, 3, 2) + F.avg_pool1d(y, 3, 2),
            torch.stack(torch.chunk(x, 2, dim=-1), dim=1).permute(0, 2, 1, 3),
            (x.unsqueeze(2) * y.unsqueeze(1)).sum(-1),
        )

    def indexing(self, x: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, ...]:
        b = x.shape[0]
        flat = x.flatten(2)  # [B, 4, 36]
        order = torch.argsort(flat, dim=-1)
        head, tail = torch.split(flat, [10, 26], dim=-1)
        scores = torch.einsum("bcn,bdn->bcd", flat, flat)
        top = torch.topk(flat, 4, dim=-1)
        q = flat[:, :, :8].reshape(b, 4, 2, 4)
        return (
            torch.gather(flat, 2, idx.unsqueeze(1).expand(b, 4, 5)),
            (flat * 0).scatter_add(2, order, flat * 3),
            F.one_hot(idx.long(), 6).float(),
            torch.index_select(flat, 2, torch.tensor([0, 5, 7])),
            F.instance_norm(x, eps=1e-5),
            F.normalize(flat, dim=-1),
            F.interpolate(self.conv(x), scale_factor=2, mode="nearest"),
            F.scaled_dot_product_attention(q, q * 0.5, q + 1, is_causal=True),
            torch.tril(scores),
            torch.stack([head, head * 2], dim=-1).sum(-1) + tail[:, :, :10],
            top.values,
            top.indices.to(torch.int32),
            order.to(torch.int32),
        )


@pytest.fixture(scope="module")
def conv_se():
    torch.manual_seed(0)
    module = ConvSE().eval()
    hw = {2: Dim("H", min=8, max=64), 3: Dim("W", min=8, max=64)}
    ep = export_program(module, (torch.randn(2, 3, 24, 24),), ({0: Dim("B", max=8), **hw},))
    return module, to_mlprogram(ep), to_mlprogram(ep, "fp16")


@pytest.fixture(scope="module")
def sequence():
    """SeqModel as fp32, fp16, and fp16 with the scan's ops kept in fp32 (casts around
    them, the way edgegate converts scans), from one export."""
    torch.manual_seed(1)
    module = SeqModel().eval()
    shapes = ({0: Dim("B", max=8), 1: Dim("T", min=2, max=64)},)
    ep = export_program(module, (torch.randint(0, 50, (2, 8)),), shapes)
    keep = {"cumsum", "exp", "sub", "select", "matmul", "expand_dims", "fill_like", "squeeze"}
    island = ct.transform.FP16ComputePrecision(op_selector=lambda op: op.op_type not in keep)
    return module, to_mlprogram(ep), to_mlprogram(ep, "fp16"), to_mlprogram(ep, island)


CONV_SIZES = [(1, 3, 8, 8), (2, 3, 24, 40), (1, 3, 64, 33)]


def test_conv_bn_hardswish_se_fp32_at_several_sizes(conv_se):
    module, fp32, _ = conv_se
    emu = Emulator(fp32)
    for shape in CONV_SIZES:
        assert_close(run_both(emu, module, [torch.randn(*shape)]), FP32_TOL)


def test_sequence_fp32_at_several_lengths(sequence):
    module, fp32 = sequence[:2]
    emu = Emulator(fp32)
    for b, t in [(1, 2), (2, 7), (3, 64)]:
        assert_close(run_both(emu, module, [torch.randint(0, 50, (b, t))]), FP32_TOL)


@pytest.mark.parametrize("fixture", ["conv_se", "sequence"])
def test_fp16_programs_round_like_fp16(fixture, request):
    """fp16 vars hold float16: the result is near torch, but visibly not the fp32 emulation."""
    module, fp32, fp16 = request.getfixturevalue(fixture)[:3]
    inputs = (
        [torch.randn(2, 3, 24, 40)] if fixture == "conv_se" else [torch.randint(0, 50, (2, 16))]
    )
    name = Emulator(fp16).input_specs()[0].name
    feeds = {name: inputs[0].numpy()}
    half = evaluate(fp16, feeds)
    full = evaluate(fp32, feeds)
    ref = torch_outputs(module, *inputs)[0]
    (got16,), (got32,) = half.values(), full.values()
    assert got16.dtype == np.float16 and got32.dtype == np.float32
    assert rel_error(got32, ref) <= FP32_TOL
    err16 = rel_error(got16, ref)
    assert 1e-5 < err16 <= FP16_TOL, err16
    assert np.abs(got16.astype(np.float32) - got32).max() > 0


def test_fp32_scan_island_in_an_fp16_program(sequence):
    """The island's vars stay fp32 between casts: near torch, rounded unlike pure fp16."""
    module, _, fp16, mixed = sequence
    spec = mixed.get_spec().mlProgram.functions["main"]
    ops = spec.block_specializations[spec.opset].operations
    assert {
        o.type.tensorType.dataType for op in ops if op.type == "cumsum" for o in op.outputs
    } == {11}  # FLOAT32
    half, part = Emulator(fp16), Emulator(mixed)
    for t in (2, 23, 64):
        tokens = torch.randint(0, 50, (2, t))
        ref = torch_outputs(module, tokens)[0]
        got16 = next(iter(half.run({"tokens": tokens.numpy()}).values()))
        got_mixed = next(iter(part.run({"tokens": tokens.numpy()}).values()))
        assert rel_error(got16, ref) <= FP16_TOL
        assert rel_error(got_mixed, ref) <= FP16_TOL
        assert not np.array_equal(got16, got_mixed)


def test_elementwise_indexing_and_shape_ops_fp32():
    torch.manual_seed(3)
    module = Ops().eval()

    def inputs(b: int) -> list[torch.Tensor]:
        idx = torch.randint(0, 6, (b, 5), dtype=torch.int32)
        return [torch.randn(b, 6, 10), torch.randn(b, 6, 10), torch.randn(b, 4, 6, 6), idx]

    shapes = tuple({0: Dim("B", max=4)} for _ in range(4))
    emu = Emulator(convert(module, tuple(inputs(2)), shapes))
    for b in (1, 3):
        assert_close(run_both(emu, module, inputs(b)), FP32_TOL)


def _builder_program():
    """MIL ops that torch conversion does not emit here, each next to its torch reference."""
    from coremltools.converters.mil import Builder as mb

    rng = np.random.default_rng(0)
    c = 8
    mean, var = rng.normal(size=c).astype(np.float32), rng.uniform(0.5, 2, c).astype(np.float32)
    gamma, beta = rng.normal(size=c).astype(np.float32), rng.normal(size=c).astype(np.float32)
    w_group = rng.normal(size=(c, 4, 3, 3)).astype(np.float32)
    w_same = rng.normal(size=(6, c, 3, 3)).astype(np.float32)
    alpha = rng.uniform(0, 0.5, c).astype(np.float32)
    nd_idx = np.array([[0, 1], [1, 3], [0, 7]], np.int32)
    sc_idx = np.array([1, 3], np.int32)
    q_scale = rng.uniform(0.01, 0.05, c).astype(np.float32)
    q_zero = rng.integers(100, 150, c).astype(np.uint8)
    sp_alpha, sp_beta = rng.uniform(0.5, 2, c).astype(np.float32), rng.uniform(0.5, 2, c)
    sp_beta = sp_beta.astype(np.float32)
    e4 = rng.normal(size=(2, 6, 6, 5)).astype(np.float32)
    half = rng.normal(size=(1, c, 1, 1)).astype(np.float16)
    mask = np.tril(np.ones((5, 5), bool))
    t = torch.from_numpy

    def refs(x: torch.Tensor, q: torch.Tensor) -> list[torch.Tensor]:
        k, v = q * 0.5, q + 1
        upd = torch.ones(2, 2, 6, 6)
        scattered = x.clone()
        scattered[:, [1, 3]] = upd
        acc = x.clone().index_put_(
            (t(nd_idx[:, 0]).long(), t(nd_idx[:, 1]).long()), torch.ones(3, 6, 6), accumulate=True
        )
        lp = x.pow(2).sum(dim=(1, 2, 3), keepdim=True)
        return [
            F.batch_norm(x, t(mean), t(var), t(gamma), t(beta), eps=1e-3),
            F.instance_norm(x, weight=t(gamma), bias=t(beta), eps=1e-5),
            x / torch.sqrt(lp + 1e-6),
            F.pixel_shuffle(x, 2),
            F.pixel_unshuffle(x, 2),
            F.conv2d(x, t(w_group), groups=2, padding=1),
            F.conv2d(F.pad(x, (0, 1, 0, 1)), t(w_same), stride=2),
            F.conv2d(F.pad(x, (1, 0, 1, 0)), t(w_same), stride=2),
            F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False),
            F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=True),
            F.max_pool2d(x, 2, 2, 0, ceil_mode=True),
            F.lp_pool2d(x, 2, 3, 2),
            F.prelu(x, t(alpha)),
            F.scaled_dot_product_attention(q, k, v, attn_mask=t(mask)),
            F.scaled_dot_product_attention(q, k, v, attn_mask=t(np.where(mask, 0.0, -3.0)).float()),
            torch.triu(torch.tril(x, 2), -1),
            x[t(nd_idx[:, 0]).long(), t(nd_idx[:, 1]).long()],
            acc,
            scattered,
            torch.nonzero(x[:, :2] > 1.0).to(torch.int32),
            torch.where(F.one_hot(t(sc_idx).long(), 5).bool(), 2.0, -1.0),
            torch.clamp(0.2 * x + 0.5, 0, 1) + F.softsign(x) + F.relu6(x * 4),
            torch.where(x > 0.3, x, 0.0) + 1.5 * torch.tanh(0.7 * x) + F.elu(x, 0.5),
            torch.logsumexp(x, dim=(2, 3))
            + x.abs().sum(dim=(2, 3))
            + x.argmin(1).float().sum((1, 2)).unsqueeze(1),
            x[:, 2:5, :, 1:].flip(1).tile(1, 2, 1, 1).reshape(2, -1),
            torch.fake_quantize_per_tensor_affine(x, 0.05, 3, -128, 127),
            torch.fake_quantize_per_channel_affine(x, t(q_scale), t(q_zero).int(), 1, 0, 255),
            unary_mix(x),
            binary_mix(x),
            torch.log((x.abs() + 0.5).sum(dim=(2, 3))) + (x * x).sum(dim=(2, 3)),
            (x.clamp(-0.9, 0.9) * 0.3 + 1).prod(dim=3),
            F.pad(x, (0, 1, 1, 2), value=0.5)
            + F.pad(x, (0, 1, 1, 2), mode="reflect")
            + F.pad(x, (0, 1, 1, 2), mode="replicate"),
            torch.stack([x, 2 * x], dim=1).reshape(4, -1),
            torch.einsum("abcd,adce->abce", x, t(e4)),
            x * t(half).float(),
        ]

    def unary_mix(x: torch.Tensor) -> torch.Tensor:
        u, pos = x.clamp(-0.9, 0.9), x.abs() + 0.5
        alpha, beta = t(sp_alpha).view(1, -1, 1, 1), t(sp_beta).view(1, -1, 1, 1)
        return (
            torch.acos(u)
            + torch.asin(u)
            + torch.atanh(u)
            + torch.cosh(u)
            + torch.sinh(u)
            + torch.tan(u)
            + torch.exp2(u)
            + x * x
            + torch.round(3 * x)
            + F.softplus(x)
            + 1 / (pos + 1e-3)
            + x.clamp(min=0.2)
            + torch.where(x >= 0, x, 0.1 * x).clamp(max=0.5)
            + (1.5 * x - 0.2)
            + alpha * torch.log1p(torch.exp(beta * x))
        )

    def binary_mix(x: torch.Tensor) -> torch.Tensor:
        y = x.flip(3)
        a, b = x > 0, y > 0.3
        return (
            torch.remainder(x, 0.7)
            + (x < y).float()
            + (x != y).float()
            + (a | b).float()
            + (a ^ b).float()
        )

    def total(*values: Any) -> Any:
        out = values[0]
        for value in values[1:]:
            out = mb.add(x=out, y=value)
        return out

    @mb.program(
        input_specs=[mb.TensorSpec((2, c, 6, 6)), mb.TensorSpec((2, 3, 5, 4))],
        opset_version=ct.target.iOS18,
    )
    def prog(x, q):
        k, v = mb.mul(x=q, y=0.5), mb.add(x=q, y=1.0)
        upd = np.ones((2, 2, 6, 6), np.float32)
        pool = {
            "kernel_sizes": [3, 3],
            "strides": [2, 2],
            "pad_type": "custom",
            "pad": [1, 1, 1, 1],
            "ceil_mode": True,
        }
        sums = [
            mb.reduce_log_sum_exp(x=x, axes=[2, 3]),
            mb.reduce_l1_norm(x=x, axes=[2, 3]),
            mb.expand_dims(
                x=mb.reduce_sum(
                    x=mb.cast(x=mb.reduce_argmin(x=x, axis=1), dtype="fp32"), axes=[1, 2]
                ),
                axes=[1],
            ),
        ]
        act = [
            mb.sigmoid_hard(x=x, alpha=0.2, beta=0.5),
            mb.softsign(x=x),
            mb.relu6(x=mb.mul(x=x, y=4.0)),
        ]
        act2 = [
            mb.thresholded_relu(x=x, alpha=0.3),
            mb.scaled_tanh(x=x, alpha=1.5, beta=0.7),
            mb.elu(x=x, alpha=0.5),
        ]
        sliced = mb.slice_by_size(x=x, begin=[0, 2, 0, 1], size=[-1, 3, -1, -1])
        u, pos = mb.clip(x=x, alpha=-0.9, beta=0.9), mb.add(x=mb.abs(x=x), y=0.5)
        unary = [
            *(getattr(mb, f)(x=u) for f in ("acos", "asin", "atanh", "cosh", "sinh", "tan")),
            mb.exp2(x=u),
            mb.square(x=x),
            mb.round(x=mb.mul(x=x, y=3.0)),
            mb.softplus(x=x),
            mb.inverse(x=pos, epsilon=1e-3),
            mb.threshold(x=x, alpha=0.2),
            mb.clamped_relu(x=x, alpha=0.1, beta=0.5),
            mb.linear_activation(x=x, alpha=1.5, beta=-0.2),
            mb.softplus_parametric(x=x, alpha=sp_alpha, beta=sp_beta),
        ]
        y = mb.reverse(x=x, axes=[3])
        a, b = mb.greater(x=x, y=0.0), mb.greater(x=y, y=0.3)
        binary = [
            mb.mod(x=x, y=0.7),
            *(
                mb.cast(x=flag, dtype="fp32")
                for flag in (
                    mb.less(x=x, y=y),
                    mb.not_equal(x=x, y=y),
                    mb.logical_or(x=a, y=b),
                    mb.logical_xor(x=a, y=b),
                )
            ),
        ]
        pads = [
            mb.pad(x=x, pad=[1, 2, 0, 1], mode="constant", constant_val=0.5),
            mb.pad(x=x, pad=[1, 2, 0, 1], mode="reflect"),
            mb.pad(x=x, pad=[1, 2, 0, 1], mode="replicate"),
        ]
        return (
            mb.batch_norm(x=x, mean=mean, variance=var, gamma=gamma, beta=beta, epsilon=1e-3),
            mb.instance_norm(x=x, gamma=gamma, beta=beta, epsilon=1e-5),
            mb.l2_norm(x=x, epsilon=1e-6),
            mb.pixel_shuffle(x=x, upscale_factor=2),
            mb.pixel_unshuffle(x=x, downscale_factor=np.uint32(2)),
            mb.conv(x=x, weight=w_group, groups=2, pad_type="same"),
            mb.conv(x=x, weight=w_same, strides=[2, 2], pad_type="same"),
            mb.conv(x=x, weight=w_same, strides=[2, 2], pad_type="same_lower"),
            mb.avg_pool(x=x, exclude_padding_from_average=True, **pool),
            mb.avg_pool(x=x, exclude_padding_from_average=False, **pool),
            mb.max_pool(x=x, kernel_sizes=[2, 2], strides=[2, 2], pad_type="valid", ceil_mode=True),
            mb.l2_pool(x=x, kernel_sizes=[3, 3], strides=[2, 2], pad_type="valid"),
            mb.prelu(x=x, alpha=alpha),
            mb.scaled_dot_product_attention(query=q, key=k, value=v, attn_mask=mask),
            mb.scaled_dot_product_attention(
                query=q, key=k, value=v, attn_mask=np.where(mask, 0.0, -3.0).astype(np.float32)
            ),
            mb.band_part(x=x, lower=1, upper=2),
            mb.gather_nd(x=x, indices=nd_idx),
            mb.scatter_nd(
                data=x, indices=nd_idx, updates=np.ones((3, 6, 6), np.float32), mode="add"
            ),
            mb.scatter(data=x, indices=sc_idx, updates=upd, axis=1, mode="update"),
            mb.non_zero(
                x=mb.cast(
                    x=mb.greater(
                        x=mb.slice_by_size(x=x, begin=[0, 0, 0, 0], size=[-1, 2, -1, -1]), y=1.0
                    ),
                    dtype="fp32",
                )
            ),
            mb.one_hot(indices=sc_idx, one_hot_vector_size=5, on_value=2.0, off_value=-1.0),
            mb.add(x=mb.add(x=act[0], y=act[1]), y=act[2]),
            mb.add(x=mb.add(x=act2[0], y=act2[1]), y=act2[2]),
            mb.add(x=mb.add(x=sums[0], y=sums[1]), y=sums[2]),
            mb.reshape(
                x=mb.tile(x=mb.reverse(x=sliced, axes=[1]), reps=[1, 2, 1, 1]), shape=[2, -1]
            ),
            mb.dequantize(
                input=mb.quantize(input=x, scale=0.05, zero_point=np.int8(3), output_dtype="int8"),
                scale=0.05,
                zero_point=np.int8(3),
            ),
            mb.dequantize(
                input=mb.quantize(
                    input=x, scale=q_scale, zero_point=q_zero, axis=1, output_dtype="uint8"
                ),
                scale=q_scale,
                zero_point=q_zero,
                axis=1,
            ),
            total(*unary),
            total(*binary),
            mb.add(
                x=mb.reduce_log_sum(x=pos, axes=[2, 3]), y=mb.reduce_sum_square(x=x, axes=[2, 3])
            ),
            mb.reduce_prod(x=mb.add(x=mb.mul(x=u, y=0.3), y=1.0), axes=[3]),
            total(*pads),
            mb.identity(x=mb.flatten2d(x=mb.stack(values=(x, mb.mul(x=x, y=2.0)), axis=1), axis=2)),
            mb.einsum(values=(x, e4), equation="abcd,adce->abce"),
            mb.mul(x=x, y=mb.constexpr_cast(source_val=half, output_dtype="fp32")),
        )

    mlmodel = ct.convert(
        prog,
        convert_to="mlprogram",
        minimum_deployment_target=ct.target.iOS18,
        compute_precision=ct.precision.FLOAT32,
    )
    return mlmodel, refs


def test_builder_ops_match_torch_references():
    mlmodel, refs = _builder_program()
    x, q = torch.randn(2, 8, 6, 6), torch.randn(2, 3, 5, 4)
    out = Emulator(mlmodel).run({"x": x.numpy(), "q": q.numpy()})
    expected = [r.float().numpy() for r in refs(x, q)]
    assert len(out) == len(expected)
    errors = {
        name: rel_error(got, ref) for (name, got), ref in zip(out.items(), expected, strict=True)
    }
    assert max(errors.values()) <= FP32_TOL, errors


def test_enumerated_shapes_accept_only_listed_shapes():
    class Scale(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.avg_pool2d(x * 2, 2)

    traced = torch.jit.trace(Scale().eval(), torch.randn(1, 3, 8, 8))
    shapes = ct.EnumeratedShapes(shapes=[(1, 3, 8, 8), (2, 3, 16, 12)], default=(1, 3, 8, 8))
    mlmodel = ct.convert(
        traced,
        inputs=[ct.TensorType(name="x", shape=shapes)],
        convert_to="mlprogram",
        minimum_deployment_target=ct.target.iOS17,
        compute_precision=ct.precision.FLOAT32,
    )
    emu = Emulator(mlmodel)
    for shape in [(1, 3, 8, 8), (2, 3, 16, 12)]:
        x = torch.randn(*shape)
        assert_close(run_both(emu, Scale(), [x]), FP32_TOL)
    with pytest.raises(BadInput, match="accepts"):
        emu.run({"x": np.zeros((1, 3, 16, 12), np.float32)})


# ---- zoo models ------------------------------------------------------------------------------

ZOO_LM = {
    "gla-lm:depth=1": 5,
    "hgrn-lm:depth=1": 5,
    "gdn-lm:depth=1": 5,
    "qlm:depth=1,attention=gated": 5,
    "qlm:depth=1,attention=clipped": 5,
}
FAST_ZOO: set[str] = set()  # all with -m slow (gla-lm also runs in tests/targets/test_coreml.py)


def _zoo_params(specs: Sequence[str]) -> list[Any]:
    return [pytest.param(s, marks=() if s in FAST_ZOO else pytest.mark.slow) for s in specs]


@pytest.mark.parametrize("spec", _zoo_params(list(ZOO_LM)))
def test_zoo_language_models_fp32_at_three_lengths(spec):
    torch.manual_seed(4)
    module = build_model(spec).eval()
    shapes = ({0: Dim("B", max=8), 1: Dim("T", min=1, max=128)},)
    emu = Emulator(convert(module, (torch.randint(0, 256, (2, 16)),), shapes))
    for b, t in [(1, 1), (2, 19), (1, 128)]:
        assert_close(run_both(emu, module, [torch.randint(0, 256, (b, t))]), FP32_TOL)


@pytest.mark.parametrize(
    "spec", _zoo_params(["qvit:depth=1,attention=gated", "qvit:depth=1,attention=clipped"])
)
def test_zoo_vit_fp32_at_two_batch_sizes(spec):
    torch.manual_seed(5)
    module = build_model(spec).eval()
    emu = Emulator(convert(module, (torch.randn(2, 3, 16, 16),), ({0: Dim("B", max=8)},)))
    for b in (1, 3):
        assert_close(run_both(emu, module, [torch.randn(b, 3, 16, 16)]), FP32_TOL)


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["mobilenet-v3-se", "gc-mobilenet"])
def test_zoo_cnns_fp32_at_three_image_sizes(spec):
    """Shipped weights (random init gives ~1e-8 logits). H, W from 33: at 32 the deepest
    stage is 1x1 and torch.export specialises on it."""
    module = load_model(spec).module.eval()
    hw = {2: Dim("H", min=33, max=512), 3: Dim("W", min=33, max=512)}
    emu = Emulator(convert(module, (torch.randn(2, 3, 64, 64),), ({0: Dim("B", max=8), **hw},)))
    for shape in [(1, 3, 33, 47), (2, 3, 64, 64), (1, 3, 128, 96)]:
        assert_close(run_both(emu, module, [torch.randn(*shape)]), FP32_TOL)


# ---- int8 weights ------------------------------------------------------------------------------


class Int8Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 32, 3, padding=1)
        self.fc1 = nn.Linear(32, 96)
        self.fc2 = nn.Linear(96, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv(x)).mean(dim=(2, 3))
        return self.fc2(F.relu(self.fc1(y)))


def int8_round_trip(module: nn.Module) -> nn.Module:
    """Per-output-channel symmetric int8 ([-127, 127]) weights, dequantized."""
    with torch.no_grad():
        for layer in (module.conv, module.fc1, module.fc2):
            w = layer.weight
            scale = w.abs().amax(dim=tuple(range(1, w.ndim)), keepdim=True) / 127
            w.copy_(torch.clamp(torch.round(w / scale), -127, 127) * scale)
    return module


@pytest.fixture(scope="module", params=["iOS17", "iOS18"])
def int8net(request):
    """(target, torch module, its fp32 ML Program for that deployment target)."""
    torch.manual_seed(6)
    module = Int8Net().eval()
    target = getattr(ct.target, request.param)
    mlmodel = convert(module, (torch.randn(2, 8, 6, 6),), ({0: Dim("B", max=8)},), target=target)
    return request.param, module, mlmodel


def test_int8_weights_match_round_tripped_torch(int8net):
    target, module, mlmodel = int8net
    module = copy.deepcopy(module)
    config = ct.optimize.coreml.OptimizationConfig(
        global_config=ct.optimize.coreml.OpLinearQuantizerConfig(
            mode="linear_symmetric", dtype="int8", granularity="per_channel"
        )
    )
    quantized = ct.optimize.coreml.linear_quantize_weights(mlmodel, config)
    constexpr = (
        "constexpr_affine_dequantize" if target == "iOS17" else "constexpr_blockwise_shift_scale"
    )
    spec = quantized.get_spec().mlProgram.functions["main"]
    types = [op.type for op in spec.block_specializations[spec.opset].operations]
    assert types.count(constexpr) == 3
    x = torch.randn(3, 8, 6, 6)
    got = next(iter(evaluate(quantized, {"x": x.numpy()}).values()))
    fp32 = next(iter(evaluate(mlmodel, {"x": x.numpy()}).values()))
    exact = torch_outputs(module, x)[0]
    rounded = torch_outputs(int8_round_trip(module), x)[0]
    assert rel_error(fp32, exact) <= FP32_TOL
    assert rel_error(got, rounded) <= FP32_TOL
    assert rel_error(got, exact) > 10 * rel_error(got, rounded)  # the int8 weights are used


def _lookup_tables(mlmodel) -> dict[tuple[int, ...], np.ndarray]:
    """Each palettized weight's table, read with coremltools' own blob reader (not ours)."""
    from coremltools.libmilstoragepython import _BlobStorageReader

    reader = _BlobStorageReader(mlmodel.weights_dir + "/weight.bin")
    fn = mlmodel.get_spec().mlProgram.functions["main"]
    tables = {}
    for op in fn.block_specializations[fn.opset].operations:
        if op.type == "constexpr_lut_to_dense":
            lut = (
                op.attributes["lut"]
                if "lut" in op.attributes
                else op.inputs["lut"].arguments[0].value
            )
            shape = tuple(d.constant.size for d in op.outputs[0].type.tensorType.dimensions)
            tables[shape] = np.array(reader.read_float_data(lut.blobFileValue.offset))
    return tables


def test_4bit_palettized_weights_match_snapped_torch(int8net):
    """kmeans LUT weights: torch with each weight snapped to its nearest table entry."""
    _, module, mlmodel = int8net
    module = copy.deepcopy(module)
    config = ct.optimize.coreml.OptimizationConfig(
        global_config=ct.optimize.coreml.OpPalettizerConfig(mode="kmeans", nbits=4)
    )
    palettized = ct.optimize.coreml.palettize_weights(mlmodel, config)
    tables = _lookup_tables(palettized)
    assert len(tables) == 3
    x = torch.randn(3, 8, 6, 6)
    exact = torch_outputs(module, x)[0]
    with torch.no_grad():
        for layer in (module.conv, module.fc1, module.fc2):
            lut = torch.from_numpy(tables[tuple(layer.weight.shape)]).float()
            nearest = (layer.weight.unsqueeze(-1) - lut).abs().argmin(-1)
            layer.weight.copy_(lut[nearest])
    got = next(iter(evaluate(palettized, {"x": x.numpy()}).values()))
    snapped = torch_outputs(module, x)[0]
    assert rel_error(got, snapped) <= FP32_TOL
    assert rel_error(got, exact) > 100 * FP32_TOL


# ---- API edges ---------------------------------------------------------------------------------


def _program_with_lstm():
    from coremltools.converters.mil import Builder as mb

    @mb.program(input_specs=[mb.TensorSpec(shape=(4, 1, 3))], opset_version=ct.target.iOS17)
    def prog(x):
        w_ih = np.random.rand(8, 3).astype(np.float32)
        w_hh = np.random.rand(8, 2).astype(np.float32)
        y, _, _ = mb.lstm(
            x=x,
            initial_h=np.zeros((1, 2), np.float32),
            initial_c=np.zeros((1, 2), np.float32),
            weight_ih=w_ih,
            weight_hh=w_hh,
            name="my_lstm",
        )
        return mb.relu(x=y)

    return ct.convert(
        prog,
        convert_to="mlprogram",
        minimum_deployment_target=ct.target.iOS17,
        compute_precision=ct.precision.FLOAT32,
    )


def test_unsupported_op_is_named_and_listed():
    mlmodel = _program_with_lstm()
    assert "lstm" not in supported_ops()
    assert unsupported_ops(mlmodel) == ["lstm"]
    with pytest.raises(UnsupportedMILOp, match="'lstm'.*'my_lstm'") as info:
        Emulator(mlmodel)
    assert isinstance(info.value, NotImplementedError)
    assert info.value.op_type == "lstm" and info.value.op_name == "my_lstm"


def test_saved_package_feeds_and_cache(sequence, tmp_path, monkeypatch):
    module, fp32 = sequence[:2]
    path = tmp_path / "sequence.mlpackage"
    fp32.save(str(path))
    assert unsupported_ops(path) == []
    built = []
    init = Emulator.__init__

    def counting_init(self, *args: Any, **kwargs: Any) -> None:
        built.append(args[0])
        init(self, *args, **kwargs)

    monkeypatch.setattr(Emulator, "__init__", counting_init)
    tokens = torch.randint(0, 50, (2, 5))
    first = evaluate(path, {"tokens": tokens.numpy()})
    again = evaluate(str(path), {"tokens": tokens.numpy().astype(np.int64)})
    assert len(built) == 1  # parsed once, then cached
    monkeypatch.undo()
    (a,), (b,) = first.values(), again.values()
    np.testing.assert_array_equal(a, b)
    assert rel_error(a, torch_outputs(module, tokens)[0]) <= FP32_TOL
    emu = Emulator(path)
    assert [(s.name, s.dtype) for s in emu.input_specs()] == [("tokens", "int32")]
    with pytest.raises(BadInput, match="dim 1 is 65"):
        emu.run({"tokens": np.zeros((1, 65), np.int32)})
    with pytest.raises(BadInput, match="missing"):
        emu.run({})
    with pytest.raises(BadInput, match="int32"):
        emu.run({"tokens": np.zeros((1, 4), np.float32)})
