"""INT8 quantization: target profiles, gate-aware quantizers, PTQ, QAT (``edgegate.quant``)."""
