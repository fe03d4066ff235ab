"""Small shared pieces: channel rounding, conv-BN-activation, the transformer MLP."""

from __future__ import annotations

from torch import nn


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of `divisor` without dropping more than 10%.

    Hardware kernels (and the MobileNet family) want channel counts in multiples of 8.
    """
    min_value = divisor if min_value is None else min_value
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def activation(name: str) -> nn.Module:
    """Activations as modules (not functionals) so graph-mode quantizers can attach."""
    table = {"relu": nn.ReLU, "hardswish": nn.Hardswish, "gelu": nn.GELU, "silu": nn.SiLU}
    if name not in table:
        raise ValueError(f"unknown activation {name!r} (known: {', '.join(table)})")
    return table[name]()


class ConvBNAct(nn.Sequential):
    """conv -> BN -> activation; BN folds into the conv at quantization time."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int,
        stride: int = 1,
        groups: int = 1,
        act: str | None = "relu",
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if act is not None:
            layers.append(activation(act))
        super().__init__(*layers)


class MLP(nn.Sequential):
    """Transformer feed-forward: Linear -> GELU -> Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
