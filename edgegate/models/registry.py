"""The model registry API used by the CLI, training and the pipeline (one import point).

Specs: a zoo spec `name[:key=value,...]`, a user factory `pkg.module:factory` (needs
trust_code), a `.pt2` exported program, or a library's classifier `timm:NAME` /
`torchvision:NAME`. See `spec.py`, `measure.py`, `checkpoint.py`, `vision.py`.
"""

from __future__ import annotations

from edgegate.models.checkpoint import (
    CHECKPOINT_FORMAT,
    WEIGHTS_DIR,
    LoadedModel,
    display_command,
    is_factory_spec,
    load_checkpoint,
    load_model,
    round_to_half,
    save_checkpoint,
    shipped_weights,
    weights_file,
)
from edgegate.models.measure import check_input_size, count_macs, count_params, example_inputs
from edgegate.models.spec import (
    ModelInfo,
    build_model,
    canonical_spec,
    get_info,
    list_models,
    parse_spec,
)
from edgegate.models.vision import is_vision_spec, with_vision_options

__all__ = [
    "CHECKPOINT_FORMAT",
    "WEIGHTS_DIR",
    "LoadedModel",
    "ModelInfo",
    "build_model",
    "canonical_spec",
    "check_input_size",
    "count_macs",
    "count_params",
    "example_inputs",
    "get_info",
    "is_factory_spec",
    "list_models",
    "load_checkpoint",
    "load_model",
    "parse_spec",
    "round_to_half",
    "save_checkpoint",
    "display_command",
    "shipped_weights",
    "weights_file",
    "is_vision_spec",
    "with_vision_options",
]
