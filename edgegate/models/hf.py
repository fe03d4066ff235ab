"""`hf:PATH_OR_ID`: a transformers causal LM, wrapped as token ids -> logits.

``PATH_OR_ID`` is a folder written by ``save_pretrained`` (config.json and safetensors
weights) or a hub id, optionally ``@REVISION`` (the CLI's ``--revision``). A hub id is read
from the local cache when it is there; otherwise the hub must be reachable, and when it is
not the error says so at once (exit 2) instead of after transformers' retries.

The wrapper calls the model with ``use_cache=False`` and returns only the logits (fp32), so
graphs carry no cache objects, and batch and length stay dynamic. Weights load from
safetensors only (no pickles); a model whose config asks for hub code needs ``--trust-code``.
transformers is an extra (``[hf]``): without it, exit 3 with the install command.
"""

from __future__ import annotations

import importlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgegate.errors import BackendUnavailable, BadInput
from edgegate.models.hf_streaming import (
    EXAMPLE_PAST,
    HfStreamingStep,
    StateSlot,
    probe_slots,
    zero_states,
)
from edgegate.models.vision import _first_line, proxied, unreachable

PREFIX = "hf:"
INSTALL = "pip install 'edgegate-nn[hf]'"
TASK = "lm"
HUB_HOST = "huggingface.co"
MIN_VOCAB = 256  # edgegate's text data is bytes: every byte must be a token id
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


@dataclass(frozen=True)
class HfSpec:
    source: str  # an absolute folder, or a hub id
    revision: str | None = None

    @property
    def is_local(self) -> bool:
        return os.path.isdir(self.source)

    @property
    def identity(self) -> str:
        return PREFIX + self.source + (f"@{self.revision}" if self.revision else "")


def is_hf_spec(spec: str | None) -> bool:
    return isinstance(spec, str) and spec.strip().startswith(PREFIX)


def parse_hf_spec(spec: str) -> HfSpec:
    """'hf:./tiny' -> HfSpec('/abs/tiny'); 'hf:org/name@rev' -> hub id and revision."""
    rest = spec.strip()[len(PREFIX) :].strip()
    if not rest:
        raise BadInput(
            f"model spec '{spec}': nothing after 'hf:' (a save_pretrained folder or a hub id)"
        )
    path = Path(rest).expanduser()
    if path.exists():
        if not path.is_dir():
            raise BadInput(
                f"model spec '{spec}': '{rest}' is a file; pass the save_pretrained folder"
            )
        return HfSpec(os.fspath(path.absolute()))
    source, _, revision = rest.partition("@")
    if not _HUB_ID.match(source):
        raise BadInput(
            f"model spec '{spec}': '{source}' is neither a folder nor a hub id (org/name)"
        )
    return HfSpec(source, revision or None)


def with_revision(spec: str, revision: str | None) -> str:
    """Fold the CLI's ``--revision`` into an ``hf:`` hub spec."""
    if revision is None:
        return spec
    if not is_hf_spec(spec):
        raise BadInput(f"--revision applies to hf: hub models, not '{spec}'")
    parsed = parse_hf_spec(spec)
    if parsed.is_local:
        raise BadInput(f"--revision applies to hub ids, and '{parsed.source}' is a local folder")
    if parsed.revision not in (None, revision):
        raise BadInput(
            f"model spec '{spec}' says revision {parsed.revision}, --revision {revision}"
        )
    return HfSpec(parsed.source, revision).identity


def _transformers(spec: HfSpec) -> Any:
    try:
        return importlib.import_module("transformers")
    except ModuleNotFoundError as err:
        if err.name and err.name.partition(".")[0] in ("transformers", "huggingface_hub"):
            raise BackendUnavailable(
                f"{spec.identity} needs the [hf] extra (transformers is not installed): {INSTALL}"
            ) from err
        raise BackendUnavailable(f"transformers does not import here ({err}): {INSTALL}") from err
    except Exception as err:
        raise BackendUnavailable(
            f"transformers does not import here ({type(err).__name__}: {err}): {INSTALL}"
        ) from err


def _local_files(spec: HfSpec) -> bool:
    """Whether the hub id is in the local cache (then nothing is downloaded)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    found = try_to_load_from_cache(spec.source, "config.json", revision=spec.revision)
    return isinstance(found, str)


def _check_folder(spec: HfSpec) -> dict[str, Any]:
    folder = Path(spec.source)
    config = folder / "config.json"
    if not config.is_file():
        raise BadInput(
            f"{spec.identity}: no config.json in the folder (write it with save_pretrained)"
        )
    if not any(folder.glob("*.safetensors")):
        raise BadInput(
            f"{spec.identity}: no .safetensors weights in the folder (edgegate loads safetensors "
            "only: save_pretrained(..., safe_serialization=True))"
        )
    try:
        return json.loads(config.read_text())
    except (OSError, ValueError) as err:
        raise BadInput(f"{spec.identity}: config.json does not parse ({err})") from err


def build_hf_model(spec: HfSpec, *, trust_code: bool = False) -> nn.Module:
    """The causal LM, wrapped; BadInput / BackendUnavailable in one line before loading."""
    transformers = _transformers(spec)
    transformers.logging.set_verbosity_error()  # its notes on CPU fallbacks are not for users
    transformers.logging.disable_progress_bar()
    local_only = False
    if spec.is_local:
        config = _check_folder(spec)
        if config.get("auto_map") and not trust_code:
            raise BadInput(
                f"{spec.identity}: its config runs hub code (auto_map); pass --trust-code"
            )
    else:
        local_only = _local_files(spec)
        if not local_only:
            _require_hub(spec)
    kwargs = {
        "revision": spec.revision,
        "local_files_only": local_only,
        "trust_remote_code": trust_code,
    }
    try:
        config = transformers.AutoConfig.from_pretrained(spec.source, **kwargs)
    except Exception as err:
        raise BadInput(
            f"{spec.identity}: transformers cannot read its config ({_first_line(err)})"
        ) from err
    causal = importlib.import_module("transformers.models.auto.modeling_auto")
    if config.model_type not in causal.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise BadInput(
            f"{spec.identity}: model type '{config.model_type}' is not a causal LM in "
            f"transformers {transformers.__version__}"
        )
    if getattr(config, "vocab_size", MIN_VOCAB) < MIN_VOCAB:
        raise BadInput(
            f"{spec.identity}: vocab_size {config.vocab_size} < {MIN_VOCAB} (edgegate's text data "
            "feeds byte ids 0..255)"
        )
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(
            spec.source,
            config=config,
            dtype=torch.float32,
            use_safetensors=True,
            attn_implementation="eager",  # plain matmul + softmax: every target, and the quantizer
            experts_implementation="batched_mm",  # MoE as gathers + batched matmuls
            **kwargs,
        )
    except Exception as err:
        raise BadInput(
            f"{spec.identity}: transformers cannot load it ({_first_line(err)})"
        ) from err
    return CausalLMLogits(model).eval()


def _require_hub(spec: HfSpec) -> None:
    if proxied():
        return  # let transformers try through the proxy
    if os.environ.get("HF_HUB_OFFLINE") not in (None, "", "0"):
        raise BadInput(
            f"cannot reach the hub for {spec.identity} (HF_HUB_OFFLINE is set and the id is not "
            "cached): pass a local folder"
        )
    why = unreachable(HUB_HOST)
    if why is not None:
        raise BadInput(
            f"cannot reach the hub for {spec.identity} ({HUB_HOST} unreachable, {why}): "
            "pass a local folder"
        )


class CausalLMLogits(nn.Module):
    """tokens [B, T] -> logits [B, T, vocab] (fp32), no cache: what every target exports."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    @property
    def model_type(self) -> str:
        return str(getattr(self.model.config, "model_type", "?"))

    def train(self, mode: bool = True) -> CausalLMLogits:
        """MoE experts as batched matmuls for tracing (every target takes them), and as
        transformers' per-expert loop for training (only the routed tokens, far less memory)."""
        super().train(mode)
        setter = getattr(self.model, "set_experts_implementation", None)
        if callable(setter) and _has_experts(self.model):
            setter("eager" if mode else "batched_mm")
        return self

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=tokens, use_cache=False, return_dict=True)
        return out.logits.float()

    # Streaming (edgegate.models.hf_streaming): the same interface as the zoo's scan LMs.

    def _slots(self) -> list[StateSlot]:
        slots = self.__dict__.get("_state_slots")
        if slots is None:  # probed once: the cache layout is the config's, not the weights'
            slots = self.__dict__["_state_slots"] = probe_slots(self.model)
        return slots

    def init_states(
        self, batch: int = 1, device: torch.device | str | None = None
    ) -> tuple[torch.Tensor, ...]:
        """A fresh stream's states, per layer (conv + recurrent, or keys + values)."""
        return zero_states(self._slots(), batch, device)

    @property
    def max_context(self) -> int | None:
        """The positions the model was built for: how long a stream's KV cache may grow."""
        value = getattr(self.model.config, "max_position_embeddings", None)
        return int(value) if isinstance(value, int) and value > 0 else None

    def state_dynamic_dims(self) -> list[tuple[int, ...]]:
        """Per state, the dims that vary between calls: batch, and a KV cache's length."""
        return [slot.dynamic for slot in self._slots()]

    def example_states(self, batch: int) -> tuple[torch.Tensor, ...]:
        """States after a short prefill: what a streaming export is traced with, since
        torch.export pins a traced size of 0 or 1 (an empty KV cache) to a constant."""
        tokens = torch.arange(EXAMPLE_PAST).repeat(batch, 1) % MIN_VOCAB
        with torch.no_grad():
            out = self.streaming()(tokens, *self.init_states(batch))
        return tuple(s.detach() for s in out[1:])

    def streaming(self) -> HfStreamingStep:
        """A module whose forward is the streaming step (shares this LM's modules)."""
        return HfStreamingStep(self.model, self._slots())


def _has_experts(model: nn.Module) -> bool:
    return getattr(model.config, "_experts_implementation", None) is not None


def is_causal_lm(module: nn.Module) -> bool:
    """A transformers causal LM as a factory returns it (wrapped by `load_model`)."""
    cls = type(module)
    return (
        cls.__module__.startswith("transformers.")
        and hasattr(module, "get_output_embeddings")
        and (cls.__name__.endswith("ForCausalLM"))
    )
