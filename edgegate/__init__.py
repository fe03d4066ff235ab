"""edgegate: deploy gated neural networks to edge runtimes."""

__version__ = "0.1.0"
