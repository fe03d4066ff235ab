"""Tiny seeded models shared by the graph-mode and Q/DQ tests."""

from __future__ import annotations

import torch
from torch import nn

from edgegate.models.blocks import Attention, ConvBNAct, GatedDeltaNetMixer, GLAMixer, SqueezeExcite

# the host's ONNX Runtime variant, the AVX2 one (exact on every x86 and ARM CPU), and TensorRT
PROFILES = ("onnxruntime", "onnxruntime:x86-avx2", "tensorrt")


class TinyCNN(nn.Module):
    """ConvBNAct stem -> ConvBNAct -> SE (residual) -> pooled Linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvBNAct(3, 8, 3, stride=2)
        self.conv = ConvBNAct(8, 8, 3)
        self.se = SqueezeExcite(8, 8)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x + self.se(self.conv(x))
        return self.head(self.pool(x).flatten(1))


class AttentionNet(nn.Module):
    def __init__(self, variant: str) -> None:
        super().__init__()
        self.inp = nn.Linear(8, 16)
        self.attn = Attention(16, heads=2, variant=variant)
        self.out = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.attn(self.inp(x)))


class MixerNet(nn.Module):
    """Linear -> scan mixer -> Linear, over x [B, T, 8]."""

    def __init__(self, mixer: nn.Module) -> None:
        super().__init__()
        self.inp = nn.Linear(8, 16)
        self.mixer = mixer
        self.out = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.mixer(self.inp(x))
        return self.out(y)


def tiny_cnn() -> TinyCNN:
    """Seeded, with BatchNorms far from identity so folding visibly changes the convs."""
    torch.manual_seed(0)
    model = TinyCNN()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1.0, 1.0)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 2.0)
            module.bias.data.uniform_(-1.0, 1.0)
    return model.eval()


def attention_net(variant: str) -> AttentionNet:
    torch.manual_seed(0)
    return AttentionNet(variant).eval()


def mixer_net(kind: str) -> MixerNet:
    torch.manual_seed(0)
    mixer = GLAMixer(16, heads=2) if kind == "gla" else GatedDeltaNetMixer(16, heads=2)
    return MixerNet(mixer).eval()
