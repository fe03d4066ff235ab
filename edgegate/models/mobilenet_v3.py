"""MobileNetV3 classifiers with hard-sigmoid squeeze-excitation gates, Small and Large.

`mobilenet-v3-se` is sized for edge demos: Small at width 0.5 with a 256-wide classifier, under
450K parameters. `mobilenet-v3-large-se` is the full-size network (Large at width 1.0, 1280-wide
classifier, about 220 M MACs at 224x224): where INT8 kernels have enough work to pay off.
Global average pooling makes both run at any input size (32x32 digits, 224x224 benchmarks).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from edgegate.models.blocks import ConvBNAct, SqueezeExcite, make_divisible

# MobileNetV3-Small (Howard et al. 2019): kernel, expanded, out, SE, activation, stride.
SMALL_CONFIG: tuple[tuple[int, int, int, bool, str, int], ...] = (
    (3, 16, 16, True, "relu", 2),
    (3, 72, 24, False, "relu", 2),
    (3, 88, 24, False, "relu", 1),
    (5, 96, 40, True, "hardswish", 2),
    (5, 240, 40, True, "hardswish", 1),
    (5, 240, 40, True, "hardswish", 1),
    (5, 120, 48, True, "hardswish", 1),
    (5, 144, 48, True, "hardswish", 1),
    (5, 288, 96, True, "hardswish", 2),
    (5, 576, 96, True, "hardswish", 1),
    (5, 576, 96, True, "hardswish", 1),
)
# MobileNetV3-Large, same columns.
LARGE_CONFIG: tuple[tuple[int, int, int, bool, str, int], ...] = (
    (3, 16, 16, False, "relu", 1),
    (3, 64, 24, False, "relu", 2),
    (3, 72, 24, False, "relu", 1),
    (5, 72, 40, True, "relu", 2),
    (5, 120, 40, True, "relu", 1),
    (5, 120, 40, True, "relu", 1),
    (3, 240, 80, False, "hardswish", 2),
    (3, 200, 80, False, "hardswish", 1),
    (3, 184, 80, False, "hardswish", 1),
    (3, 184, 80, False, "hardswish", 1),
    (3, 480, 112, True, "hardswish", 1),
    (3, 672, 112, True, "hardswish", 1),
    (5, 672, 160, True, "hardswish", 2),
    (5, 960, 160, True, "hardswish", 1),
    (5, 960, 160, True, "hardswish", 1),
)
CONFIGS = {"small": (SMALL_CONFIG, 576), "large": (LARGE_CONFIG, 960)}  # blocks, last conv
STEM_CHANNELS = 16
LAST_CONV_CHANNELS = 576


class InvertedResidual(nn.Module):
    """1x1 expand -> depthwise kxk -> SE (after the depthwise, as in V3) -> 1x1 project."""

    def __init__(
        self,
        cin: int,
        kernel: int,
        expanded: int,
        cout: int,
        se: bool,
        act: str,
        stride: int,
        se_gate: Literal["hardsigmoid", "sigmoid"] = "hardsigmoid",
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if expanded != cin:
            layers.append(ConvBNAct(cin, expanded, 1, act=act))
        layers.append(ConvBNAct(expanded, expanded, kernel, stride, groups=expanded, act=act))
        if se:
            layers.append(SqueezeExcite(expanded, make_divisible(expanded / 4, 8), se_gate))
        layers.append(ConvBNAct(expanded, cout, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


def build_features(
    in_channels: int,
    width: float,
    se_gate: Literal["hardsigmoid", "sigmoid"],
    size: Literal["small", "large"] = "small",
) -> tuple[list[nn.Module], int]:
    """[stem, bneck..., last 1x1 conv] and the output channel count."""
    config, last_conv = CONFIGS[size]
    cin = make_divisible(STEM_CHANNELS * width)
    layers: list[nn.Module] = [ConvBNAct(in_channels, cin, 3, 2, act="hardswish")]
    for kernel, expanded, out, se, act, stride in config:
        cexp, cout = make_divisible(expanded * width), make_divisible(out * width)
        layers.append(InvertedResidual(cin, kernel, cexp, cout, se, act, stride, se_gate))
        cin = cout
    last = make_divisible(last_conv * width)
    layers.append(ConvBNAct(cin, last, 1, act="hardswish"))
    return layers, last


class ClassifierHead(nn.Sequential):
    """Global pool (any input size) -> Linear -> hard-swish -> dropout -> Linear."""

    def __init__(self, cin: int, hidden: int, num_classes: int, dropout: float) -> None:
        super().__init__(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(1),
            nn.Linear(cin, hidden),
            nn.Hardswish(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )


def init_weights(module: nn.Module) -> None:
    """torchvision's MobileNetV3 init; PyTorch defaults shrink activations ~100x by stage 3."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


class MobileNetV3(nn.Module):
    """images [B, C, H, W] -> logits [B, num_classes]."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        width: float = 0.5,
        last_channel: int = 256,
        se_gate: Literal["hardsigmoid", "sigmoid"] = "hardsigmoid",
        dropout: float = 0.1,
        size: Literal["small", "large"] = "small",
    ) -> None:
        super().__init__()
        layers, cout = build_features(in_channels, width, se_gate, size)
        self.features = nn.Sequential(*layers)
        self.head = ClassifierHead(cout, last_channel, num_classes, dropout)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def mobilenet_v3_se(
    width: float = 0.5,
    num_classes: int = 10,
    in_channels: int = 3,
    last_channel: int = 256,
    se_gate: Literal["hardsigmoid", "sigmoid"] = "hardsigmoid",
    dropout: float = 0.1,
) -> MobileNetV3:
    """Zoo factory `mobilenet-v3-se`."""
    return MobileNetV3(num_classes, in_channels, width, last_channel, se_gate, dropout)


def mobilenet_v3_large_se(
    width: float = 1.0,
    num_classes: int = 10,
    in_channels: int = 3,
    last_channel: int = 1280,
    se_gate: Literal["hardsigmoid", "sigmoid"] = "hardsigmoid",
    dropout: float = 0.2,
) -> MobileNetV3:
    """Zoo factory `mobilenet-v3-large-se`: the full-size network INT8 is measured on."""
    return MobileNetV3(num_classes, in_channels, width, last_channel, se_gate, dropout, "large")
