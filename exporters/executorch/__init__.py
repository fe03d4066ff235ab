"""ExecuTorch export: XNNPACK-delegated .pte programs with edgegate's scans decomposed."""

from edgegate.exporters.executorch.export import (
    IO_METHOD,
    MAX_BATCH,
    PteExport,
    dim_name,
    export_pte,
    scan_max_len,
    unsupported_ops,
)

__all__ = [
    "IO_METHOD",
    "MAX_BATCH",
    "PteExport",
    "dim_name",
    "export_pte",
    "scan_max_len",
    "unsupported_ops",
]
