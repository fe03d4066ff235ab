"""Turn a calibrated brevitas model into plain torch with explicit quantize/dequantize ops.

Why our own Q/DQ insertion and not brevitas's ONNX export: brevitas's QCDQ exporter goes
through TorchScript (its dynamo path refuses quantized bias), which cannot carry edgegate's
custom scan ops or their fallback functions, and it needs `onnxoptimizer`. Instead every
brevitas layer is replaced by a twin that calls PyTorch's `quantized_decomposed` ops with
the calibrated scales and zero points, and the float integer weights are stored as int8
(bias as int32 under profiles that quantize it). `edgegate.exporters.onnx` then exports the
twin like any model: each `quantized_decomposed` op becomes one ONNX QuantizeLinear or
DequantizeLinear, the scan custom ops export as before, and the Q/DQ placement is exactly
the fake-quant placement, so onnxruntime reproduces the brevitas model.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import torch.ao.quantization.fx._decomposed  # noqa: F401  (registers quantized_decomposed ops)
import torch.nn.functional as F
from brevitas.nn import QuantConv1d, QuantConv2d, QuantIdentity, QuantLinear
from torch import fx, nn

from edgegate.quant.graph import replace_module
from edgegate.quant.integer_attention import IntegerClippedSoftmax, OnGrid
from edgegate.quant.integer_gates import HARD_SIGMOID_RANGE, SaturatingHardSigmoid

_ops = torch.ops.quantized_decomposed


@dataclass(frozen=True)
class TensorQuant:
    """Per-tensor affine quantization as ONNX stores it: scale, zero point, integer type."""

    scale: float
    zero_point: int
    bits: int
    signed: bool
    narrow: bool

    @property
    def dtype(self) -> torch.dtype:
        return torch.int8 if self.signed else torch.uint8

    @property
    def qmin(self) -> int:
        if not self.signed:
            return 0
        return -(2 ** (self.bits - 1)) + int(self.narrow)

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.signed else 2**self.bits - 1


def tensor_quant(proxy: nn.Module) -> TensorQuant | None:
    """The calibrated per-tensor parameters of a brevitas activation proxy, or None if off."""
    if not proxy.is_quant_enabled:
        return None
    scale = float(proxy.scale())
    zero_point = proxy.zero_point()
    return TensorQuant(
        scale=scale,
        zero_point=int(round(float(zero_point))) if zero_point is not None else 0,
        bits=int(proxy.bit_width()),
        signed=bool(proxy.is_signed),
        narrow=bool(proxy.is_narrow_range),
    )


class QuantDequant(nn.Module):
    """x -> Q -> DQ: the ONNX QuantizeLinear/DequantizeLinear pair of one tensor."""

    def __init__(self, quant: TensorQuant) -> None:
        super().__init__()
        self.quant = quant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.quant
        args = (q.scale, q.zero_point, q.qmin, q.qmax, q.dtype)
        return _ops.dequantize_per_tensor(_ops.quantize_per_tensor(x, *args), *args)

    def extra_repr(self) -> str:
        q = self.quant
        return f"scale={q.scale:.6g}, zero_point={q.zero_point}, dtype={q.dtype}"


class QDQLayer(nn.Module):
    """Conv or Linear over int8 weights (and int32 bias) stored as integers, with its input's
    Q/DQ. Outputs are quantized by a quantizer of their own after the layer
    (``quant.graph._place_quantizers``), which becomes a `QuantDequant` of its own here."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.kind = "linear" if isinstance(layer, QuantLinear) else f"conv{layer.weight.dim() - 2}d"
        if self.kind != "linear":
            self.conv_args = (layer.stride, layer.padding, layer.dilation, layer.groups)
        input_quant = tensor_quant(layer.input_quant)
        assert tensor_quant(layer.output_quant) is None, "quant.graph places output quantizers"
        # an input on its producer's grid already (quant.graph shares that quantizer) gets
        # no second Q/DQ; its scale still sets the int32 bias's
        on_grid = getattr(layer, "input_on_grid", False)
        self.gemm_2d = getattr(layer, "gemm_2d", False)
        self.input_qdq = QuantDequant(input_quant) if input_quant and not on_grid else None
        with torch.no_grad():
            weight = layer.quant_weight()
            # brevitas gives a per-tensor scale as a 0-d tensor, a per-channel one as [C, 1, ..];
            # a per-tensor scale is kept as a Python float too, so the export sees a constant
            self.weight_per_tensor = weight.scale.dim() == 0
            scale = weight.scale.detach().flatten().float()
            self.tensor_scales: tuple[float, float] | None = None
            self.register_buffer("weight_int", weight.int().detach().to(torch.int8))
            self.register_buffer("weight_scale", scale)
            self.register_buffer("weight_zero", torch.zeros_like(scale, dtype=torch.int64))
            high = 2 ** (int(layer.weight_quant.bit_width()) - 1) - 1  # 127, or 63 for 7-bit
            self.weight_range = (-high if layer.weight_quant.is_narrow_range else -high - 1, high)
            bias_int = bias_scale = bias_float = None
            if layer.bias is not None and layer.bias_quant.is_quant_enabled and input_quant:
                bias_scale = scale * input_quant.scale  # int32 bias: scale = input * weight
                bias_int = torch.round(layer.bias / bias_scale).to(torch.int32)
            elif layer.bias is not None:
                bias_float = layer.bias.detach().clone()
            if self.weight_per_tensor:
                bias_tensor_scale = float(bias_scale) if bias_scale is not None else 0.0
                self.tensor_scales = (float(scale), bias_tensor_scale)
            self.register_buffer("bias_int", bias_int)
            self.register_buffer("bias_scale", bias_scale)
            self.register_buffer("bias_float", bias_float)

    def _weight(self) -> torch.Tensor:
        low, high = self.weight_range
        if self.tensor_scales is not None:  # one DequantizeLinear scale for the whole tensor
            scale = self.tensor_scales[0]
            return _ops.dequantize_per_tensor(self.weight_int, scale, 0, low, high, torch.int8)
        return _ops.dequantize_per_channel(
            self.weight_int, self.weight_scale, self.weight_zero, 0, low, high, torch.int8
        )

    def _bias(self) -> torch.Tensor | None:
        if self.bias_int is None:
            return self.bias_float
        if self.tensor_scales is not None:
            scale = self.tensor_scales[1]
            return _ops.dequantize_per_tensor(
                self.bias_int, scale, 0, -(2**31), 2**31 - 1, torch.int32
            )
        return _ops.dequantize_per_channel(
            self.bias_int,
            self.bias_scale,
            torch.zeros_like(self.bias_int, dtype=torch.int64),
            0,
            -(2**31),
            2**31 - 1,
            torch.int32,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_qdq is not None:
            x = self.input_qdq(x)
        return _apply(self, x, self._weight(), self._bias())


def _apply(
    layer: QDQLayer | _FloatTwin,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
) -> torch.Tensor:
    """The layer's linear or convolution of ``x`` with ``weight`` and ``bias``."""
    if layer.kind == "linear":
        if getattr(layer, "gemm_2d", False) and x.dim() > 2:
            return F.linear(x.flatten(0, -2), weight, bias).unflatten(0, x.shape[:-1])
        return F.linear(x, weight, bias)
    conv = F.conv2d if layer.kind == "conv2d" else F.conv1d
    return conv(x, weight, bias, *layer.conv_args)


class SixToUnit(nn.Module):
    """A `SaturatingHardSigmoid` as Q/DQ: ``x (+ 3)`` quantized to u8 at 6/255 (the clip is
    the saturation), and the same bytes dequantized at 1/255, which divides by 6. The 3 is a
    dequantized u8 constant, so that ONNX Runtime fuses the add into ``QLinearAdd``; the
    quantize after a conv whose bias holds the 3 fuses into its ``QLinearConv``."""

    def __init__(self, gate: SaturatingHardSigmoid) -> None:
        super().__init__()
        quant = tensor_quant(gate.six.act_quant)
        assert quant is not None and not quant.signed and quant.zero_point == 0
        self.six = quant
        self.unit_scale = quant.scale / HARD_SIGMOID_RANGE
        self.offset = gate.offset
        # the offset as u8 255 at scale offset/255 (exact for 3: 255 * 3/255)
        self.register_buffer("offset_int", torch.full((1,), 255, dtype=torch.uint8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.six
        if self.offset:
            offset = _ops.dequantize_per_tensor(
                self.offset_int, self.offset / 255.0, 0, 0, 255, torch.uint8
            )
            x = x + offset
        codes = _ops.quantize_per_tensor(x, q.scale, 0, q.qmin, q.qmax, q.dtype)
        return _ops.dequantize_per_tensor(codes, self.unit_scale, 0, q.qmin, q.qmax, q.dtype)

    @property
    def quant(self) -> TensorQuant:
        """The output's quantization: the gate's [0, 1] grid (u8, scale 1/255)."""
        return dataclasses.replace(self.six, scale=self.unit_scale)

    def extra_repr(self) -> str:
        return f"offset={self.offset:g}, scale={self.six.scale:.6g} -> {self.unit_scale:.6g}"


# --- attention forms (edgegate.quant.integer_attention) -----------------------------------------


class GridView(nn.Module):
    """An `OnGrid` as Q/DQ: the grid's Q (exact: the values are on it), then a DQ at ``scale *
    factor``. ONNX Runtime keeps the integer tensor through Gather and Transpose between a
    Q and a DQ of one grid, and reads ``x * factor`` off the same codes."""

    def __init__(self, module: OnGrid) -> None:
        super().__init__()
        quant = tensor_quant(module.grid)
        assert quant is not None, "OnGrid follows an enabled quantizer"
        self.grid, self.factor = quant, module.factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.grid
        codes = _ops.quantize_per_tensor(x, q.scale, q.zero_point, q.qmin, q.qmax, q.dtype)
        scale = float(np.float32(q.scale) * np.float32(self.factor))
        return _ops.dequantize_per_tensor(codes, scale, q.zero_point, q.qmin, q.qmax, q.dtype)

    def extra_repr(self) -> str:
        return f"scale={self.grid.scale:.6g}, factor={self.factor:g}"


class ClippedSoftmaxQDQ(nn.Module):
    """An `IntegerClippedSoftmax` as Q/DQ: softmax -> Q on the gate grid -> DQ at ``(zeta -
    gamma) / 255`` -> + gamma (a dequantized u8 constant), which ORT fuses with the gate
    quantizer's Q after it into one QLinearAdd."""

    def __init__(self, module: IntegerClippedSoftmax) -> None:
        super().__init__()
        quant = tensor_quant(module.unit.act_quant)
        assert quant is not None and not quant.signed and quant.zero_point == 0
        self.unit, self.dim = quant, module.dim
        self.stretch = float(np.float32(quant.scale) * np.float32(module.zeta - module.gamma))
        # gamma <= 0 as the u8 code 0 with zero point 1 and scale -gamma: exactly gamma
        self.shift = -module.gamma
        self.register_buffer("shift_int", torch.zeros(1, dtype=torch.uint8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.unit
        p = torch.softmax(x, self.dim)
        codes = _ops.quantize_per_tensor(p, q.scale, 0, q.qmin, q.qmax, q.dtype)
        stretched = _ops.dequantize_per_tensor(codes, self.stretch, 0, q.qmin, q.qmax, q.dtype)
        if not self.shift:
            return stretched
        gamma = _ops.dequantize_per_tensor(self.shift_int, self.shift, 1, 0, 255, torch.uint8)
        return stretched + gamma


def _twin(module: nn.Module) -> nn.Module | None:
    if isinstance(module, SaturatingHardSigmoid):
        return SixToUnit(module)
    if isinstance(module, (QuantConv1d, QuantConv2d, QuantLinear)):
        return QDQLayer(module)
    if isinstance(module, OnGrid):
        return GridView(module)
    if isinstance(module, IntegerClippedSoftmax):
        return ClippedSoftmaxQDQ(module)
    if isinstance(module, QuantIdentity):
        quant = tensor_quant(module.act_quant)
        return QuantDequant(quant) if quant is not None else nn.Identity()
    return None


@torch.no_grad()
def to_qdq(model: fx.GraphModule) -> fx.GraphModule:
    """A copy of the calibrated fake-quant ``model`` in plain torch + quantized_decomposed ops."""
    qdq = copy.deepcopy(model).eval()
    replaced: list[str] = []
    for name, module in list(qdq.named_modules()):
        if any(name.startswith(f"{done}.") for done in replaced):
            continue  # inside a module already replaced by its twin
        twin = _twin(module)
        if twin is None:
            continue
        replace_module(qdq, name, twin)
        replaced.append(name)
    return qdq


def activation_quants(qdq: nn.Module) -> dict[str, TensorQuant]:
    """Every activation Q/DQ of a twin by module name (for profile checks and reports)."""
    found: dict[str, TensorQuant] = {}
    for name, module in qdq.named_modules():
        if isinstance(module, (QuantDequant, SixToUnit)):
            found[name] = module.quant
    return found


class _FloatTwin(nn.Module):
    """A QDQLayer with its weights dequantized once: what a weight-only runtime computes."""

    def __init__(self, layer: QDQLayer) -> None:
        super().__init__()
        self.kind = layer.kind
        self.conv_args = getattr(layer, "conv_args", None)
        self.input_qdq = layer.input_qdq
        self.weight = nn.Parameter(layer._weight().detach().clone(), requires_grad=False)
        bias = layer._bias()
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_qdq is not None:
            x = self.input_qdq(x)
        return _apply(self, x, self.weight, self.bias)


@torch.no_grad()
def dequantized_weights(qdq: nn.Module) -> nn.Module:
    """A copy of a Q/DQ twin whose int8 weights are float tensors on the int8 grid, for
    converters that quantize weights themselves (Core ML stores them back as int8 exactly)."""
    copied = copy.deepcopy(qdq).eval()
    for name, module in list(copied.named_modules()):
        if isinstance(module, QDQLayer):
            replace_module(copied, name, _FloatTwin(module))
    return copied
