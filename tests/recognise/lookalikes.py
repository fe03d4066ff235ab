"""Models built from blocks shaped like torchvision's and timm's, for the recognisers.

torchvision and timm cannot import on this machine (torchvision has no CPU build here), so
these blocks copy their structure, not their code: the same submodules, the same ops in the
same order, and where the registry keys a block by class, the same qualified class name.
Loaded as ``tests.recognise.lookalikes:<factory>`` with --trust-code.

- ``TorchvisionLikeSE``: AdaptiveAvgPool2d -> fc1 -> ReLU -> fc2 -> scale_activation, then
  ``scale * input``; ``NamedLikeTorchvisionSE`` is the same block under torchvision's
  qualified class name (``torchvision.ops.misc.SqueezeExcitation``).
- ``TimmLikeSE``: ``x.mean((2, 3), keepdim=True)`` -> conv_reduce -> act -> conv_expand ->
  gate, then ``x * gate``; ``TimmLikeEffectiveSE``: one conv, hard-sigmoid gate.
- ``BatchNormAct``: a BatchNorm2d subclass that runs ``F.batch_norm`` and its activation in
  its own forward after a shape check, as timm's ``BatchNormAct2d`` does, so the norm is a
  function in the graph and the conv before it has a second (metadata-only) user.
- ``PlainConv``: a Conv2d subclass that keeps torch's forward (timm's ``create_conv2d``).
- ``HandWrittenSE``: an SE block whose gate is ``relu6(x + 3) / 6`` written out: no
  recogniser can read it, so it must be named in a warning.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PlainConv(nn.Conv2d):
    pass


class BatchNormAct(nn.BatchNorm2d):
    def __init__(self, channels: int, act: bool = True) -> None:
        super().__init__(channels)
        self.act = nn.Hardswish() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch._assert(x.ndim == 4, "expected a 4D input")  # a shape check, as timm's has
        x = F.batch_norm(
            x,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            self.training,
            self.momentum,
            self.eps,
        )
        return self.act(x)


class TorchvisionLikeSE(nn.Module):
    def __init__(self, channels: int, squeeze: int, gate: type[nn.Module] = nn.Hardsigmoid):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.activation = nn.ReLU()
        self.scale_activation = gate()

    def _scale(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._scale(x) * x


class NamedLikeTorchvisionSE(TorchvisionLikeSE):
    pass


NamedLikeTorchvisionSE.__module__ = "torchvision.ops.misc"
NamedLikeTorchvisionSE.__qualname__ = "SqueezeExcitation"


class TimmLikeSE(nn.Module):
    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, squeeze, 1)
        self.act1 = nn.SiLU()
        self.conv_expand = nn.Conv2d(squeeze, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.conv_expand(self.act1(self.conv_reduce(s))))


class TimmLikeEffectiveSE(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.fc(x.mean((2, 3), keepdim=True)))


class HandWrittenSE(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.fc(F.adaptive_avg_pool2d(x, 1))
        return x * (F.relu6(s + 3.0) / 6.0)


class Block(nn.Module):
    """Depthwise-separable block: PlainConv + BatchNormAct, an SE block, a 1x1 projection."""

    def __init__(self, cin: int, cout: int, se: nn.Module, stride: int = 1) -> None:
        super().__init__()
        self.conv_dw = PlainConv(cin, cin, 3, stride, 1, groups=cin, bias=False)
        self.bn1 = BatchNormAct(cin)
        self.se = se
        self.conv_pw = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn2 = BatchNormAct(cout, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv_pw(self.se(self.bn1(self.conv_dw(x)))))


class LookalikeNet(nn.Module):
    """A small classifier for 3x32x32 digits with every SE form above."""

    def __init__(self, num_classes: int = 10, hand_written: bool = False) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), BatchNormAct(16))
        blocks = [
            Block(16, 24, TorchvisionLikeSE(16, 8)),
            Block(24, 32, NamedLikeTorchvisionSE(24, 8, nn.Sigmoid), stride=2),
            Block(32, 32, TimmLikeSE(32, 8)),
            Block(32, 48, TimmLikeEffectiveSE(32), stride=2),
        ]
        if hand_written:
            blocks.append(Block(48, 48, HandWrittenSE(48)))
        self.blocks = nn.Sequential(*blocks)
        self.gate_proj = nn.Conv2d(48, 48, 1)
        self.head = nn.Linear(48, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        x = x * torch.sigmoid(self.gate_proj(x))  # an elementwise gate, as a function
        return self.head(x.mean((2, 3)))


def _with_stats(model: nn.Module) -> nn.Module:
    """Non-trivial BN statistics, so folding that ignores them would show."""
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=generator) * 0.1)
    return model.eval()


def lookalike_net() -> nn.Module:
    torch.manual_seed(0)
    return _with_stats(LookalikeNet())


def lookalike_net_hand_written() -> nn.Module:
    torch.manual_seed(0)
    return _with_stats(LookalikeNet(hand_written=True))
