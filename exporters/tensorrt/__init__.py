"""TensorRT build kits: ONNX that TensorRT's parser maps to edgegate's plugins, the plugin
sources, trtexec command lines for TensorRT 10.x and 11.x, and golden data to check an engine
against PyTorch on the device."""

from edgegate.exporters.tensorrt.kit import KitPart, write_kit
from edgegate.exporters.tensorrt.onnx_model import (
    MAX_PARSER_OPSET,
    PLUGIN_FIELDS,
    PLUGIN_OPS,
    for_tensorrt,
    with_fallbacks,
)
from edgegate.exporters.tensorrt.trtexec import (
    ShapeRange,
    build_command,
    golden_command,
    timing_command,
)

__all__ = [
    "MAX_PARSER_OPSET",
    "PLUGIN_FIELDS",
    "PLUGIN_OPS",
    "KitPart",
    "ShapeRange",
    "build_command",
    "for_tensorrt",
    "golden_command",
    "timing_command",
    "with_fallbacks",
    "write_kit",
]
