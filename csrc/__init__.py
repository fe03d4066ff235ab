"""C++ and CUDA sources (installed as ``edgegate.csrc``): package data, not Python.

``tensorrt/`` holds the TensorRT plugin library that ``edgegate export --target tensorrt``
copies into each build kit, and the CPU build of its kernels' arithmetic used by the tests.
"""
