"""Exporters: ONNX, TensorRT and Core ML (installed as ``edgegate.exporters``)."""
