"""Plain JSON for reports and manifests: dataclasses, numpy values and paths made serialisable,
non-finite floats spelled out (JSON has none), and files written atomically."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from edgegate.atomic import atomic_write


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _plain(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return _plain(obj.item())
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)  # JSON has no inf/nan
    if isinstance(obj, Path):
        return str(obj)
    return obj


def to_json(obj: Any) -> str:
    return json.dumps(_plain(obj), indent=2, allow_nan=False)


def write_json(path: str | Path, obj: Any) -> Path:
    with atomic_write(path, "w") as fh:
        fh.write(to_json(obj) + "\n")
    return Path(path)
