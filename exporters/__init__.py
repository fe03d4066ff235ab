"""Exporters: ONNX, TensorRT, Core ML and ExecuTorch (installed as ``edgegate.exporters``)."""
