"""`timm:NAME` and `torchvision:NAME`: image classifiers from the libraries people already use.

A spec is ``LIBRARY:NAME[:key=value,...]`` with the options ``num_classes`` (default: the
library's, 1000 for ImageNet models) and ``pretrained`` (download the library's weights). The
model's identity, recorded in checkpoints and manifests, keeps ``num_classes`` and drops
``pretrained``: the weights themselves are recorded apart (a checkpoint, or the export's
``weights.pt``), so rebuilding a model never downloads.

Building one of these runs the library's code, not the user's: no ``--trust-code``. The
libraries are an extra (``[vision]``); when one is missing, or installed but broken, the
error says so in one line (exit 3) before any work starts.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from edgegate.errors import BackendUnavailable, BadInput

LIBRARIES = ("timm", "torchvision")
INSTALL = "pip install 'edgegate-nn[vision]'"
TASK = "image"  # every model these sources build is an image classifier
_NAME = re.compile(r"^[A-Za-z_][\w.\-]*$")
_OPTIONS = {"num_classes": int, "pretrained": bool}
_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}
_PROBE_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class VisionSpec:
    """A parsed ``timm:`` / ``torchvision:`` spec; ``num_classes`` None = the library's."""

    library: str
    name: str
    num_classes: int | None = None
    pretrained: bool = False

    @property
    def identity(self) -> str:
        """What checkpoints and manifests record: the model, never where its weights came from."""
        base = f"{self.library}:{self.name}"
        return base if self.num_classes is None else f"{base}:num_classes={self.num_classes}"

    @property
    def text(self) -> str:
        """The whole spec, ``pretrained`` included: what the CLI hands the pipeline."""
        if not self.pretrained:
            return self.identity
        return self.identity + (",pretrained=true" if self.num_classes else ":pretrained=true")


def is_vision_spec(spec: str | None) -> bool:
    """Whether ``spec`` names a model by its library (``timm:...``, ``torchvision:...``)."""
    if not isinstance(spec, str):
        return False
    library, sep, _ = spec.strip().partition(":")
    return bool(sep) and library in LIBRARIES


def parse_vision_spec(spec: str) -> VisionSpec:
    """'timm:efficientnet_b0:num_classes=10' -> VisionSpec; BadInput (one line) if malformed."""
    library, _, rest = spec.strip().partition(":")
    name, sep, text = rest.partition(":")
    name = name.strip()
    if not name:
        example = "efficientnet_b0" if library == "timm" else "resnet18"
        raise BadInput(
            f"model spec '{spec}': no model name after '{library}:' (e.g. {library}:{example})"
        )
    if not _NAME.match(name):
        raise BadInput(f"model spec '{spec}': '{name}' is not a {library} model name")
    options: dict[str, Any] = {}
    if sep and not text.strip():
        raise BadInput(f"model spec '{spec}': nothing after ':' (expected key=value,...)")
    for item in text.split(",") if sep else []:
        key, eq, value = (part.strip() for part in item.partition("="))
        if not eq or not key:
            raise BadInput(
                f"model spec '{spec}': malformed option '{item.strip()}' (expected key=value)"
            )
        if key not in _OPTIONS:
            raise BadInput(
                f"model spec '{spec}': unknown option '{key}' (known: {', '.join(_OPTIONS)})"
            )
        if key in options:
            raise BadInput(f"model spec '{spec}': option '{key}' given twice")
        options[key] = _convert(spec, key, value)
    num_classes = options.get("num_classes")
    if num_classes is not None and num_classes < 2:
        raise BadInput(f"model spec '{spec}': num_classes must be at least 2, got {num_classes}")
    return VisionSpec(library, name, num_classes, options.get("pretrained", False))


def _convert(spec: str, key: str, text: str) -> Any:
    if _OPTIONS[key] is int:
        try:
            return int(text)
        except ValueError:
            raise BadInput(
                f"model spec '{spec}': bad value '{text}' for option '{key}' (expected an integer)"
            ) from None
    if text.lower() not in _TRUE | _FALSE:
        raise BadInput(
            f"model spec '{spec}': bad value '{text}' for option '{key}' (expected true or false)"
        )
    return text.lower() in _TRUE


def with_vision_options(
    spec: str, *, num_classes: int | None = None, pretrained: bool = False
) -> str:
    """Fold the CLI's ``--num-classes`` / ``--pretrained`` into a ``timm:``/``torchvision:``
    spec; BadInput when the model is of another kind or the spec already says otherwise."""
    if num_classes is None and not pretrained:
        return spec
    flags = " and ".join(
        flag
        for flag, given in (
            ("--num-classes", num_classes is not None),
            ("--pretrained", pretrained),
        )
        if given
    )
    if not is_vision_spec(spec):
        hint = (
            " (a zoo model takes it in its spec, e.g. mobilenet-v3-se:num_classes=10)"
            if num_classes is not None
            else ""
        )
        raise BadInput(
            f"{flags} applies to timm:NAME and torchvision:NAME models, not '{spec}'{hint}"
        )
    parsed = parse_vision_spec(spec)
    if num_classes is not None and parsed.num_classes not in (None, num_classes):
        raise BadInput(
            f"model spec '{spec}' says num_classes={parsed.num_classes}, "
            f"but --num-classes is {num_classes}"
        )
    merged = VisionSpec(
        parsed.library,
        parsed.name,
        num_classes if num_classes is not None else parsed.num_classes,
        parsed.pretrained or pretrained,
    )
    if merged.num_classes is not None and merged.num_classes < 2:
        raise BadInput(f"--num-classes must be at least 2, got {merged.num_classes}")
    return merged.text


# --- the libraries --------------------------------------------------------------------------

_import_failures: dict[str, str] = {}  # library -> "" (imports), _NOT_INSTALLED, or why not
_NOT_INSTALLED = "not installed"


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0].strip()}" if text else type(err).__name__


def _installed_version(library: str) -> str | None:
    try:
        return importlib.metadata.version(library)
    except importlib.metadata.PackageNotFoundError:
        return None


def import_failure(library: str) -> str | None:
    """Why ``library`` (or torchvision, which timm imports) cannot be used here, or None.

    The answer is kept for the process: a failed import can leave half a package behind,
    and trying again would only report a different, misleading error.
    """
    needed = ["torchvision"] if library == "torchvision" else ["torchvision", "timm"]
    for name in needed:
        if name not in _import_failures:
            _import_failures[name] = _try_import(name)
    failures = {name: _import_failures[name] for name in needed if _import_failures[name]}
    missing = [name for name, why in failures.items() if why == _NOT_INSTALLED]
    if failures and len(missing) == len(failures):
        verb = "is" if len(missing) == 1 else "are"
        return f"needs the [vision] extra ({' and '.join(missing)} {verb} not installed): {INSTALL}"
    broken = [why for why in failures.values() if why != _NOT_INSTALLED]
    if not broken:
        return None
    why = broken[0]
    if library == "timm" and "torchvision" in failures:
        why = f"timm imports torchvision; {why}"
    return why


def _try_import(name: str) -> str:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name is not None and err.name.partition(".")[0] == name:
            return _NOT_INSTALLED
        return f"{name} does not import here ({_first_line(err)}): {INSTALL}"
    except Exception as err:  # an installed wheel built for another torch fails here
        version = _installed_version(name)
        return (
            f"{name}{' ' + version if version else ''} does not import here beside torch "
            f"{torch.__version__} ({_first_line(err)}): install the {name} build made for "
            f"this torch, then {INSTALL}"
        )
    return ""


def _library(spec: VisionSpec) -> ModuleType:
    failure = import_failure(spec.library)
    if failure:
        raise BackendUnavailable(f"{spec.library}:{spec.name}: {failure}")
    return importlib.import_module(spec.library)


_LISTS = {"timm": "timm.list_models()", "torchvision": "torchvision.models.list_models()"}


def _unknown(spec: VisionSpec, known: list[str], what: str = "model") -> BadInput:
    close = difflib.get_close_matches(spec.name, known, n=4, cutoff=0.6)
    hint = f"close: {', '.join(close)}" if close else f"{_LISTS[spec.library]} lists them"
    return BadInput(f"unknown {spec.library} {what} '{spec.name}' ({hint})")


def check_name(spec: VisionSpec) -> None:
    """BadInput naming close matches when the library has no image classifier by that name."""
    lib = _library(spec)
    if spec.library == "timm":
        if not lib.is_model(spec.name):
            raise _unknown(spec, lib.list_models())
        if "." in spec.name:  # a weight tag: `resnet18.a1_in1k`
            try:
                lib.models.get_pretrained_cfg(spec.name)
            except RuntimeError:
                arch = spec.name.partition(".")[0]
                raise _unknown(spec, lib.list_pretrained(f"{arch}.*"), "weight tag") from None
        return
    classifiers = lib.models.list_models(module=lib.models)
    if spec.name not in classifiers:
        if spec.name in lib.models.list_models():
            raise BadInput(
                f"torchvision:{spec.name} is not an image classifier "
                "(edgegate takes torchvision.models' classifiers)"
            )
        raise _unknown(spec, classifiers)


# --- building ----------------------------------------------------------------------------------


def build_vision_model(spec: VisionSpec) -> nn.Module:
    """The library's model, with its pretrained weights when ``spec.pretrained``."""
    check_name(spec)
    kwargs = {} if spec.num_classes is None else {"num_classes": spec.num_classes}
    if spec.pretrained:
        return _pretrained(spec, kwargs)
    return _construct(spec, kwargs)


def _construct(spec: VisionSpec, kwargs: dict[str, Any], **extra: Any) -> nn.Module:
    lib = importlib.import_module(spec.library)
    try:
        if spec.library == "timm":
            return lib.create_model(spec.name, **kwargs, **extra)
        return lib.models.get_model(spec.name, **kwargs, **extra)
    except (ValueError, TypeError, RuntimeError) as err:
        raise BadInput(
            f"model '{spec.identity}': {spec.library} cannot build it ({_first_line(err)})"
        ) from err


def _pretrained(spec: VisionSpec, kwargs: dict[str, Any]) -> nn.Module:
    """Weights from the local cache when there, else downloaded; offline, one line at once
    (the libraries would retry for a minute, then print a traceback)."""
    label = f"{spec.library}:{spec.name}"
    if spec.library == "timm":
        cfg = importlib.import_module("timm").models.get_pretrained_cfg(spec.name)
        if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
            raise BadInput(f"{label} has no pretrained weights in timm: pass -c")
        cached = _timm_cached(cfg)
        if cached is None:
            host = "huggingface.co" if cfg.hf_hub_id else urlparse(cfg.url).hostname
            _require_network(label, host)
        extra = {"pretrained_cfg_overlay": {"file": cached}} if cached else {}
        return _download(label, lambda: _construct(spec, kwargs, pretrained=True, **extra))
    tv = importlib.import_module("torchvision")
    weights_enum = tv.models.get_model_weights(spec.name)
    weights = getattr(weights_enum, "DEFAULT", None)
    if weights is None:
        raise BadInput(f"{label} has no pretrained weights in torchvision: pass -c")
    if _hub_file(weights.url) is None:
        _require_network(label, urlparse(weights.url).hostname)
    state = _download(  # torch.hub would unpickle in full by default
        label, lambda: weights.get_state_dict(progress=False, map_location="cpu", weights_only=True)
    )
    module = _construct(spec, kwargs)
    _load_matching(module, state)
    return module


def _load_matching(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load every tensor whose shape fits; a head resized by ``num_classes`` keeps its init."""
    own = module.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    module.load_state_dict(fitting, strict=False)


def _hub_file(url: str | None) -> str | None:
    """Where torch.hub keeps a download of ``url``, if it has one."""
    if not url:
        return None
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)
    return str(path) if path.is_file() else None


def _timm_cached(cfg: Any) -> str | None:
    """A local file holding ``cfg``'s weights: the Hugging Face cache, or torch.hub's."""
    if cfg.file:
        return str(cfg.file)
    if cfg.hf_hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return None
        names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else []
        for filename in [*names, "model.safetensors", "pytorch_model.bin"]:
            found = try_to_load_from_cache(cfg.hf_hub_id, filename)
            if isinstance(found, str):
                return found
        return None
    return _hub_file(cfg.url)


def proxied() -> bool:
    """Whether a proxy is set: it may reach what a direct connection cannot."""
    return any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY"))


def unreachable(host: str | None) -> str | None:
    """Why ``host`` cannot be reached on port 443 (the error's type), or None when it can, or
    when a proxy is set (a proxy may reach what a direct connection cannot: let the library
    try). A short probe, so an offline machine fails in one line instead of after retries."""
    if not host or proxied():
        return None
    try:
        socket.create_connection((host, 443), timeout=_PROBE_TIMEOUT_S).close()
    except OSError as err:
        return type(err).__name__
    return None


def _require_network(label: str, host: str | None) -> None:
    why = unreachable(host)
    if why is not None:
        raise BadInput(
            f"cannot download pretrained weights for {label} (no network: {host} "
            f"unreachable, {why}): pass -c"
        )


def _download(label: str, fetch: Any) -> Any:
    try:
        return fetch()
    except BadInput:
        raise
    except Exception as err:
        raise BadInput(
            f"cannot download pretrained weights for {label} ({_first_line(err)}): pass -c"
        ) from err


def classifier_key(module: nn.Module) -> str | None:
    """The state-dict key of the classifier's weight (timm says which; else the last Linear)."""
    get = getattr(module, "get_classifier", None)
    head = get() if callable(get) else None
    names = {id(m): n for n, m in module.named_modules()}
    if isinstance(head, nn.Module) and id(head) in names and hasattr(head, "weight"):
        return f"{names[id(head)]}.weight"
    linear = [n for n, m in module.named_modules() if isinstance(m, nn.Linear)]
    return f"{linear[-1]}.weight" if linear else None


def head_mismatch(module: nn.Module, state_dict: dict[str, Any]) -> int | None:
    """The class count a state dict's head holds, when it differs from ``module``'s."""
    key = classifier_key(module)
    if key is None or key not in state_dict:
        return None
    theirs, ours = state_dict[key], module.state_dict()[key]
    if isinstance(theirs, torch.Tensor) and theirs.ndim >= 1 and theirs.shape[0] != ours.shape[0]:
        return int(theirs.shape[0])
    return None
