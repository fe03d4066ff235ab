"""Validation: parity, accuracy and latency of a candidate against a reference.

Names are re-exported lazily, so ``import edgegate.validate.accuracy`` does not pull in
the runtimes (and through them torch) before they are needed. The ``bench`` function
is deliberately not re-exported: ``from edgegate.validate import bench`` must keep
meaning the submodule.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Tolerance": "parity",
    "OutputParity": "parity",
    "ParityReport": "parity",
    "compare_outputs": "parity",
    "run_parity": "parity",
    "BenchResult": "bench",
    "StreamResult": "bench",
    "bench_two_stage": "bench",
    "plot_latencies": "bench",
    "Table": "report",
    "to_json": "report",
    "from_json": "report",
    "write_json": "report",
    "write_markdown": "report",
    "write_junit": "report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'edgegate.validate' has no attribute '{name}'")
    return getattr(importlib.import_module(f"edgegate.validate.{module}"), name)
