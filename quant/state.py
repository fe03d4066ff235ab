"""The calibrated fake-quant state on disk: what `quantize` saves and `validate` rebuilds.

The file holds the brevitas model's state dict and the record of how it was made (profile,
method); rebuilding applies the same graph passes to the float model, then loads the state.
It is read with ``torch.load(weights_only=True)``, like every model file edgegate reads.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgegate.atomic import atomic_write
from edgegate.errors import BadInput
from edgegate.quant.calibrate import add_corrected_bias_slots
from edgegate.quant.graph import QuantConfig, quantize_model
from edgegate.quant.profiles import get_profile

# /2: hard-swish and hard-sigmoid gates as saturating requantizations under the onnxruntime
# profiles (edgegate.quant.integer_gates), which changed those graphs' modules and parameters
# /3: attention blocks in integer forms under the onnxruntime profiles (edgegate.quant.
# integer_attention): shared grids, gate-product, scores and clipped-softmax quantizers
STATE_FORMAT = "edgegate-int8/3"
OLDER_FORMATS = ("edgegate-int8/1", "edgegate-int8/2")


def tensor_hash(tensor: torch.Tensor) -> str:
    """SHA-256 of an exact tensor (shape, dtype and bytes): the calibration-data fingerprint."""
    h = hashlib.sha256(f"{tuple(tensor.shape)}:{tensor.dtype}".encode())
    h.update(tensor.contiguous().numpy().tobytes())
    return h.hexdigest()


def save_state(
    path: str | os.PathLike[str], model: nn.Module, spec: str, record: dict[str, Any]
) -> Path:
    """Write the calibrated (or QAT-trained) fake-quant state with its quantization record."""
    path = Path(path)
    payload = {"format": STATE_FORMAT, "spec": spec, "quant": record, "state": model.state_dict()}
    with atomic_write(path, "wb") as fh:
        torch.save(payload, fh)
    return path


def load_fake_quant(path: str | os.PathLike[str], float_module: nn.Module) -> nn.Module:
    """Rebuild the calibrated brevitas model saved by ``save_state`` (weights_only load)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BadInput(f"cannot read quantized state '{path}': {exc}") from exc
    if isinstance(state, dict) and state.get("format") in OLDER_FORMATS:
        raise BadInput(
            f"'{path}' was made by an older edgegate ({state['format']}, this one reads "
            f"{STATE_FORMAT}): run `edgegate quantize` again"
        )
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise BadInput(f"'{path}' is not an edgegate INT8 state ({STATE_FORMAT})")
    q = state["quant"]
    # no equalization here even when the state was equalized: its weights are in the state
    config = QuantConfig(
        get_profile(
            q["profile"],
            w8a8=q.get("w8a8", False),
            quantize_state=q.get("quantize_state", False),
            granularity=q.get("weight_granularity"),
        ),
        q["method"],
        q["quantize_scan_inputs"],
    )
    if q.get("streaming"):  # the state belongs to the streaming step of a scan LM
        float_module = float_module.streaming()
    module = quantize_model(float_module, config)
    add_corrected_bias_slots(module, state["state"])
    module.load_state_dict(state["state"])
    return module.eval()
