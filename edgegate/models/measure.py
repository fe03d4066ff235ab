"""Example inputs, parameter counts and MAC counts for zoo and user models."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from edgegate.errors import BadInput
from edgegate.models.blocks import SCAN_MODULES
from edgegate.models.lm import VOCAB
from edgegate.models.spec import ModelInfo, get_info, parse_spec


def example_inputs(
    spec_or_info: str | ModelInfo,
    batch: int = 1,
    input_size: int | None = None,
    seq_len: int | None = None,
) -> tuple[torch.Tensor, ...]:
    """Random inputs of the right shape: images randn [B,C,S,S], tokens randint(256) [B,T]."""
    if isinstance(spec_or_info, ModelInfo):
        info, options = spec_or_info, {}
    else:
        name, options = parse_spec(spec_or_info)
        info = get_info(name)
    if batch < 1:
        raise BadInput(f"batch must be >= 1, got {batch}")
    if info.takes_tokens:
        default_t = options.get("seq_len", info.default_input[0])
        t = default_t if seq_len is None else seq_len
        if t < 1 or (info.fixed_input and t > default_t):
            raise BadInput(f"model '{info.name}': seq_len {t} outside [1, {default_t}]")
        return (torch.randint(0, VOCAB, (batch, t)),)
    channels = options.get("in_channels", info.default_input[0])
    default_s = options.get("image_size", info.default_input[-1])
    size = default_s if input_size is None else input_size
    check_input_size(info, size, default_s)
    return (torch.randn(batch, channels, size, size),)


def check_input_size(info: ModelInfo, size: int, default: int | None = None) -> None:
    """BadInput for an image side the model cannot take, or that would be degenerate."""
    default = info.default_input[-1] if default is None else default
    if info.fixed_input and size != default:
        raise BadInput(f"images of side {size} do not fit {info.name}: it takes {default}")
    if size < max(1, info.min_input):
        raise BadInput(
            f"images of side {size} do not fit {info.name}: below its total stride "
            f"{info.min_input}, they shrink to padding (use --input-size {info.min_input} or more)"
        )


def count_params(module: nn.Module) -> int:
    """Number of parameters (shared ones counted once)."""
    return sum(p.numel() for p in module.parameters())


def count_macs(module: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> int:
    """Multiply-accumulates of one forward pass (FlopCounterMode flops / 2).

    Scan modules are counted analytically instead of measured: a custom-op or chunked
    implementation would otherwise count as zero or as its own (different) work.
    """
    root = type(module).__name__
    scans = {
        f"{root}.{name}": mod
        for name, mod in module.named_modules()
        if isinstance(mod, SCAN_MODULES)
    }
    analytic = 0

    def hook(mod: nn.Module, args: tuple, _out: object) -> None:
        nonlocal analytic
        analytic += mod.analytic_macs(*args)

    handles = [mod.register_forward_hook(hook) for mod in scans.values()]
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module(*example_inputs)
    finally:
        for handle in handles:
            handle.remove()
    counts = counter.get_flop_counts()
    inside = sum(sum(counts.get(name, {}).values()) for name in scans)
    return (counter.get_total_flops() - inside) // 2 + analytic
