"""ONNX export with `edgegate` custom gated-scan nodes, Scan fallbacks and an ORT lowering."""

from edgegate.exporters.onnx.export import (
    LOWERINGS,
    auto_dynamic_shapes,
    custom_ops_used,
    export_onnx,
    load_model,
)
from edgegate.exporters.onnx.lowering import lower_to_ort_linear_attention
from edgegate.exporters.onnx.schemas import DOMAIN

__all__ = [
    "DOMAIN",
    "LOWERINGS",
    "auto_dynamic_shapes",
    "custom_ops_used",
    "export_onnx",
    "load_model",
    "lower_to_ort_linear_attention",
]
