"""Weight-only quantization for language models: INT4 codes per group of input features.

A model prepared for W4 is the float model with some ``nn.Linear`` layers replaced by
``W4Linear`` (4-bit codes, one scale per ``group_size`` input features) and the layers that
stay higher precision (scan gate projections, output gates) by ``W8Linear`` (int8 per output
channel) or left float. Activations stay float, so the fake-quant model computes exactly what
a kernel computes that dequantizes the weights and multiplies in float; every target's file is
judged against it.

Symmetric codes use the full range [-8, 7] (scale max(-min / 8, max / 7) per group); asymmetric
codes lie in [0, 15] with a zero point per group. Every target's file carries these very codes
and scales, written from the layer's buffers: none re-derives them from the dequantized weight
(targets' own symmetric rules divide by 7 or 7.5 and would round to other codes).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgegate.errors import BadInput
from edgegate.quant.groups import W8_MAX, dequantize_groups, quantize_groups
from edgegate.quant.w4_config import W4Config

__all__ = [
    "W4Config",
    "W4Linear",
    "W8Linear",
    "dequantize_groups",
    "prepare_w4",
    "quantize_groups",
]


class _WeightOnly(nn.Module):
    """Shared body of the weight-only layers: integer codes, scales per group, float bias."""

    bits: int = 4

    def __init__(
        self,
        codes: torch.Tensor,
        scales: torch.Tensor,
        zero_points: torch.Tensor | None,
        bias: torch.Tensor | None,
        group_size: int,
    ) -> None:
        super().__init__()
        self.out_features, self.in_features = codes.shape
        self.group_size = group_size
        self.register_buffer("codes", codes.to(torch.int8).contiguous())
        self.register_buffer("scales", scales.float().contiguous())
        self.register_buffer(
            "zero_points", None if zero_points is None else zero_points.to(torch.int8)
        )
        self.bias = None if bias is None else nn.Parameter(bias.detach().float().clone())

    @property
    def symmetric(self) -> bool:
        return self.zero_points is None

    def weight_dequantized(self) -> torch.Tensor:
        """float32 [out, in]: (codes - zp) * scale per group."""
        return dequantize_groups(self.codes, self.scales, self.zero_points, self.group_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight_dequantized().to(x.dtype), self.bias)

    def extra_repr(self) -> str:
        kind = "symmetric" if self.symmetric else "asymmetric"
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"group_size={self.group_size}, {kind}"
        )


class W4Linear(_WeightOnly):
    """A linear layer whose weight is 4-bit codes per group of `group_size` input features."""

    bits = 4

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        group_size: int,
        symmetric: bool = True,
        clip: torch.Tensor | None = None,
    ) -> W4Linear:
        """Round-to-nearest W4 of ``linear`` (AWQ scaling, if any, is done before, in float;
        ``clip``: per-group range ratios, see ``quantize_groups``)."""
        codes, scales, zero_points = quantize_groups(linear.weight, group_size, symmetric, clip)
        return cls(codes, scales, zero_points, linear.bias, group_size)


class W8Linear(_WeightOnly):
    """A linear layer kept at higher precision: int8 weights, one scale per output channel
    (a single group spanning the input features), symmetric in [-127, 127]."""

    bits = 8

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> W8Linear:
        w = linear.weight.detach().float()
        amax = w.abs().amax(1, keepdim=True)
        scales = torch.where(amax > 0, amax / W8_MAX, torch.ones_like(amax))
        codes = torch.round(w / scales).clamp(-W8_MAX, W8_MAX).to(torch.int8)
        return cls(codes, scales, None, linear.bias, w.shape[1])


WEIGHT_ONLY_TYPES = (W4Linear, W8Linear)


def _replace(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attr, module)


def prepare_w4(
    model: nn.Module,
    config: W4Config,
    calibration_batches: list[tuple[torch.Tensor, ...]],
) -> nn.Module:
    """The W4 fake-quant copy of ``model``: AWQ scaling folded into the float copy (where it
    folds exactly), then W4 rounding of the selected linears and ``config.keep`` for the
    layers that stay higher precision. ``model`` is left unchanged.

    The copy carries ``w4_record`` (what was quantized, kept and scaled, for the manifest).
    """
    from edgegate.quant.awq import apply_awq, search_clips
    from edgegate.quant.w4_select import plan_w4

    config.check()
    model = copy.deepcopy(model).eval()
    plan = plan_w4(model)
    plan.check(config.group_size)
    awq: dict[str, Any] = {"applied": [], "skipped": []}
    clips: dict[str, torch.Tensor] = {}
    if config.awq:
        awq = apply_awq(model, plan, config, calibration_batches)
        clips = search_clips(model, plan, config, calibration_batches)
        awq["clipped_groups"] = sum(int((c < 1).sum()) for c in clips.values())
        awq["groups"] = sum(c.numel() for c in clips.values())
    for name in plan.quantized:
        layer = model.get_submodule(name)
        w4 = W4Linear.from_linear(layer, config.group_size, config.symmetric, clips.get(name))
        _replace(model, name, w4)
    if config.keep == "int8":
        for name in plan.kept:
            _replace(model, name, W8Linear.from_linear(model.get_submodule(name)))
    model.w4_record = {
        "group_size": config.group_size,
        "symmetric": config.symmetric,
        "keep": config.keep,
        "quantized": list(plan.quantized),
        "kept": [{"layer": name, "why": why} for name, why in plan.kept.items()],
        "awq": awq,
    }
    return model


def weight_only_layers(model: nn.Module) -> dict[str, _WeightOnly]:
    """The W4 and kept int8 layers of a prepared model, by qualified name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, WEIGHT_ONLY_TYPES)}


def weight_only_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """What the W4 state file holds: the prepared model's state dict (codes, scales, zero
    points, the float rest), loadable with ``weights_only=True``."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def load_weight_only(model: nn.Module, record: dict[str, Any], state: dict[str, Any]) -> nn.Module:
    """Rebuild a prepared model from the float ``model``, the manifest's ``record`` and the
    state ``prepare_w4`` saved: the same layers replaced, the saved codes loaded."""
    model = copy.deepcopy(model).eval()
    kept = [item["layer"] for item in record["kept"]] if record.get("keep") == "int8" else []
    for name in record["quantized"]:
        layer = model.get_submodule(name)
        _replace(
            model, name, W4Linear.from_linear(layer, record["group_size"], record["symmetric"])
        )
    for name in kept:
        _replace(model, name, W8Linear.from_linear(model.get_submodule(name)))
    model.load_state_dict(state)
    return model


W4_FORMAT = "edgegate-w4/1"


def save_w4_state(path: Any, model: nn.Module, spec: str, record: dict[str, Any]) -> None:
    """Write a prepared model's state with its record (``torch.load(weights_only=True)``)."""
    from edgegate.atomic import atomic_write

    payload = {"format": W4_FORMAT, "spec": spec, "quant": record, "state": model.state_dict()}
    with atomic_write(path, "wb") as fh:
        torch.save(payload, fh)


def load_w4_state(path: Any, float_module: nn.Module) -> nn.Module:
    """The fake-quant W4 model ``save_w4_state`` wrote, rebuilt on ``float_module``."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BadInput(f"cannot read W4 state '{path}': {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != W4_FORMAT:
        raise BadInput(f"'{path}' is not an edgegate W4 state ({W4_FORMAT})")
    record = payload["quant"]
    if record.get("streaming"):
        float_module = float_module.streaming()
    return load_weight_only(float_module, record, payload["state"])
