"""Checkpoints and model loading: zoo spec, user factory (`pkg.module:fn`), `.pt2`, or a
library's model (`timm:NAME`, `torchvision:NAME`, built in `vision.py`).

Loading is safe by default (design.md §7): checkpoints go through
`torch.load(weights_only=True)`; importing a user's factory or unpickling a full pickle
needs `trust_code=True` (the CLI's `--trust-code`).
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import inspect
import logging
import os
import pickle
import re
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgegate import __version__
from edgegate.atomic import atomic_write
from edgegate.errors import BadInput
from edgegate.models.hf import TASK as HF_TASK
from edgegate.models.hf import (
    CausalLMLogits,
    build_hf_model,
    is_causal_lm,
    is_hf_spec,
    parse_hf_spec,
)
from edgegate.models.spec import (
    ModelInfo,
    build_model,
    canonical_spec,
    get_info,
    is_zoo_name,
    parse_spec,
)
from edgegate.models.vision import TASK as VISION_TASK
from edgegate.models.vision import (
    build_vision_model,
    head_mismatch,
    is_vision_spec,
    parse_vision_spec,
)

CHECKPOINT_FORMAT = "edgegate-ckpt-1"
WEIGHTS_DIR = Path(__file__).parent / "weights"
_FACTORY_SPEC = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")


@dataclass
class LoadedModel:
    """A model ready to run: `module` in eval mode, `spec` its identity string. `task` is
    known for zoo models (in `info`) and library classifiers (timm, torchvision); None for a
    user's model, whose task the user names. `origin` says where weights that no file holds
    came from (a library's random init or its pretrained weights), for reports."""

    module: nn.Module
    spec: str
    info: ModelInfo | None
    metrics: dict[str, Any] = field(default_factory=dict)
    task: str | None = None
    origin: str | None = None


def is_factory_spec(spec: str) -> bool:
    """'module:factory' or 'pkg.module:factory'; a zoo name before the colon makes it a zoo
    spec instead (``qvit:attention`` is a malformed zoo spec, not a module called qvit)."""
    spec = spec.strip()
    if not _FACTORY_SPEC.match(spec) or is_vision_spec(spec) or is_hf_spec(spec):
        return False
    return not is_zoo_name(spec.partition(":")[0])


def _record_spec(spec: str) -> str:
    if is_hf_spec(spec):
        return parse_hf_spec(spec).identity
    if is_vision_spec(spec):
        return parse_vision_spec(spec).identity
    return spec.strip() if is_factory_spec(spec) else canonical_spec(spec)


def _plain(value: Any, where: str) -> Any:
    """Copy `value` keeping only types that `torch.load(weights_only=True)` accepts."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if value is None or type(value) in (bool, int, float, str):
        return value
    # exact builtins only: numpy.float64 subclasses float but pickles as a numpy global
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise BadInput(f"checkpoint {where}: key {k!r} is not a string")
            out[k] = _plain(v, f"{where}.{k}")
        return out
    if callable(getattr(value, "tolist", None)):  # numpy scalars and arrays
        return _plain(value.tolist(), where)
    raise BadInput(f"checkpoint {where}: {type(value).__name__} cannot be stored safely")


def save_checkpoint(
    path: str | os.PathLike[str],
    module: nn.Module,
    spec: str,
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    *,
    half: bool = False,
) -> Path:
    """Write {format, spec, state_dict, metrics, extra} atomically (tmp file + os.replace).

    ``half`` stores float32 tensors as float16, halving the file; loading casts them back
    into the model's float32 parameters. Call `round_to_half` first, and measure the
    metrics after it, so that they describe the weights the file holds.
    """
    path = Path(path)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "edgegate_version": __version__,
        "spec": _record_spec(spec),
        "state_dict": {k: _stored(v.detach().cpu(), half) for k, v in module.state_dict().items()},
        "metrics": _plain(metrics or {}, "metrics"),
        "extra": _plain(extra or {}, "extra"),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as fh:
        torch.save(payload, fh)
    return path


def _stored(tensor: torch.Tensor, half: bool) -> torch.Tensor:
    return tensor.half() if half and tensor.dtype == torch.float32 else tensor


@torch.no_grad()
def round_to_half(module: nn.Module) -> nn.Module:
    """Round every float32 parameter and buffer to its nearest float16 value, in place."""
    for tensor in [*module.parameters(), *module.buffers()]:
        if tensor.dtype == torch.float32:
            tensor.copy_(tensor.half().float())
    return module


def _torch_load(path: Path, trust_code: bool) -> Any:
    """torch.load, safe unless trusted; every failure becomes one BadInput line."""
    if not path.is_file():
        raise BadInput(f"checkpoint '{path}': file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Unsupported global" not in str(err):
            raise BadInput(f"checkpoint '{path}' is corrupt or not a PyTorch file") from err
        if not trust_code:
            raise BadInput(
                f"checkpoint '{path}' is a full pickle that cannot be loaded safely; "
                "pass --trust-code to allow full pickles"
            ) from err
    except Exception as err:
        raise BadInput(
            f"checkpoint '{path}' is corrupt or not a PyTorch file ({type(err).__name__})"
        ) from err
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise BadInput(f"checkpoint '{path}' failed to unpickle: {type(err).__name__}") from err


def _check_format(obj: Any, path: Path) -> dict[str, Any]:
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
        found = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise BadInput(
            f"checkpoint '{path}' is not an edgegate checkpoint "
            f"(format {found!r}, expected {CHECKPOINT_FORMAT!r})"
        )
    if not isinstance(obj.get("spec"), str) or not isinstance(obj.get("state_dict"), dict):
        raise BadInput(f"checkpoint '{path}' lacks a spec string or a state_dict")
    obj.setdefault("metrics", {})
    obj.setdefault("extra", {})
    return obj


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read an edgegate checkpoint safely (weights_only=True); BadInput naming the path."""
    path = Path(path)
    return _check_format(_torch_load(path, trust_code=False), path)


def _read_any(path: Path, trust_code: bool) -> dict[str, Any] | nn.Module:
    """edgegate checkpoint, bare state_dict, or (trusted full pickle) a whole module."""
    obj = _torch_load(path, trust_code)
    if isinstance(obj, nn.Module):
        return obj
    if isinstance(obj, dict) and "format" in obj:
        return _check_format(obj, path)
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {"spec": None, "state_dict": obj, "metrics": {}}
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        return {"spec": None, "state_dict": obj["state_dict"], "metrics": {}}
    return _check_format(obj, path)  # raises with the found format


def _load_state(module: nn.Module, state_dict: dict[str, Any], path: Path, spec: str) -> None:
    try:
        result = module.load_state_dict(state_dict, strict=False)
    except RuntimeError as err:
        detail = str(err).strip().splitlines()[-1].strip()
        raise BadInput(f"checkpoint '{path}' does not fit model '{spec}': {detail}") from err
    if result.missing_keys or result.unexpected_keys:
        missing = ", ".join(result.missing_keys[:3]) or "none"
        unexpected = ", ".join(result.unexpected_keys[:3]) or "none"
        raise BadInput(
            f"checkpoint '{path}' does not fit model '{spec}': "
            f"missing keys [{missing}], unexpected keys [{unexpected}]"
        )


def weights_file(spec: str) -> Path:
    """Where a zoo spec's shipped weights live: weights/<spec, ':'->'__', ','->'_', '='->'-'>.pt."""
    stem = canonical_spec(spec).replace(":", "__").replace(",", "_").replace("=", "-")
    return WEIGHTS_DIR / f"{stem}.pt"


def display_command(command: str) -> str:
    """A recorded training command with any absolute weights path shown relative to the repo."""
    return re.sub(r"\S*?(edgegate/models/weights/)", r"\1", command)


def shipped_weights(spec: str) -> Path | None:
    """The shipped weights file of a zoo spec, if there is one."""
    if is_factory_spec(spec) or is_vision_spec(spec):
        return None
    path = weights_file(spec)
    return path if path.is_file() else None


class _ProgramForward:
    """``ExportedModule.forward`` with the program's own signature (``forward(x)``, not
    ``forward(*args)``): torch.export binds example inputs and dynamic shapes to the signature
    of ``forward``, and a ``*args`` one would take one nested tuple where every exporter gives
    one entry per input. A descriptor, so that each access calls the instance's own program
    (a deep copy's included)."""

    def __get__(self, instance: ExportedModule | None, owner: type) -> Any:
        if instance is None:
            return self
        inner = instance.inner

        def forward(*args: Any, **kwargs: Any) -> Any:
            return inner(*args, **kwargs)

        forward.__signature__ = inspect.signature(inner.forward)  # type: ignore[attr-defined]
        return forward


class ExportedModule(nn.Module):
    """An exported program's module as a plain nn.Module (train/eval are no-ops on it).

    ``max_batch`` is the largest batch the program accepts (its range for the inputs' first
    dim), None when unbounded: edgegate's own batched runs (scoring 256 rows at a time) stay
    within it."""

    forward = _ProgramForward()

    def __init__(self, inner: nn.Module, max_batch: int | None = None) -> None:
        super().__init__()
        self.inner = inner
        self.max_batch = max_batch

    def train(self, mode: bool = True) -> ExportedModule:
        self.training = mode  # exported graphs fix their mode at export time
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> ExportedModule:
        """A plain deep copy, without the FutureWarning torch prints for copying the program's
        input spec (its own deprecated leaf class), which every quantize run would show."""
        clone = type(self).__new__(type(self))
        memo[id(self)] = clone
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            clone.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return clone


class ReexportFailed(RuntimeError):
    """edgegate's own torch.export of a `.pt2` program failed. torch.export produced that
    program once already, so the input is not at fault: the CLI reports an internal error
    (a bug to report), never exit 2."""


def export_failure(module: nn.Module, message: str) -> Exception:
    """The error for a failed torch.export of ``module``: BadInput for a user's own code
    (data-dependent branches, an op torch.export lacks), ReexportFailed for a loaded program."""
    if isinstance(module, ExportedModule):
        return ReexportFailed(
            f"{message} (edgegate's re-export of an exported program: a bug in edgegate, not "
            "in the input; --debug shows where)"
        )
    return BadInput(message)


def program_max_batch(program: torch.export.ExportedProgram) -> int | None:
    """The largest first dim every user input of ``program`` accepts: its static size, or the
    upper end of its symbol's range; None when no input bounds it."""
    users = set(program.graph_signature.user_inputs)
    limits = []
    for node in program.graph.nodes:
        value = node.meta.get("val")
        if node.op != "placeholder" or node.name not in users:
            continue
        if not isinstance(value, torch.Tensor) or value.dim() == 0:
            continue
        size = value.shape[0]
        if isinstance(size, int):
            limits.append(size)
            continue
        bound = program.range_constraints.get(size.node.expr)
        upper = None if bound is None else _whole(bound.upper)
        if upper is not None:
            limits.append(upper)
    return min(limits) if limits else None


def _whole(bound: Any) -> int | None:
    """A range end as an int; None for torch's unbounded end (``int_oo``, which sympy counts
    as finite but cannot convert)."""
    try:
        return int(bound)
    except (TypeError, ValueError, OverflowError, AttributeError):
        return None


def _load_exported(path: Path) -> LoadedModel:
    if not path.is_file():
        raise BadInput(f"exported program '{path}': file not found")
    export_log = logging.getLogger("torch.export")
    level = export_log.level
    export_log.setLevel(logging.CRITICAL)  # torch logs a traceback before raising
    try:
        with warnings.catch_warnings():  # torch's own deprecations while unpickling specs
            warnings.simplefilter("ignore", FutureWarning)
            program = torch.export.load(path)
    except Exception as err:
        raise BadInput(
            f"exported program '{path}' is corrupt or not a torch.export file "
            f"({type(err).__name__})"
        ) from err
    finally:
        export_log.setLevel(level)
    module = ExportedModule(program.module(), program_max_batch(program))
    return LoadedModel(module.eval(), str(path), None, {})


@contextlib.contextmanager
def _cwd_importable() -> Iterator[None]:
    """Let a trusted factory live in the working folder, as `python -m` would allow; the
    console script's own sys.path starts at its bin folder instead."""
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def _load_factory(
    spec: str, ckpt: dict[str, Any] | None, path: Path | None, trust_code: bool
) -> LoadedModel:
    spec = spec.strip()
    if not trust_code:
        raise BadInput(f"loading '{spec}' runs its Python code; pass --trust-code to allow it")
    module_name, _, attr = spec.partition(":")
    try:
        with _cwd_importable():
            pymod = importlib.import_module(module_name)
    except Exception as err:
        raise BadInput(f"model '{spec}': cannot import '{module_name}' ({err})") from err
    factory = getattr(pymod, attr, None)
    if not callable(factory):
        raise BadInput(f"model '{spec}': '{module_name}' has no callable '{attr}'")
    try:
        module = factory()
    except Exception as err:
        raise BadInput(f"model '{spec}': factory failed ({type(err).__name__}: {err})") from err
    if not isinstance(module, nn.Module):
        raise BadInput(f"model '{spec}': factory returned {type(module).__name__}, not nn.Module")
    task = None
    if is_causal_lm(module):  # as transformers builds it: logits only, no cache outputs
        module, task = CausalLMLogits(module), HF_TASK
    if ckpt is not None and path is not None:
        _load_state(module, ckpt["state_dict"], path, spec)
    metrics = dict(ckpt["metrics"]) if ckpt else {}
    return LoadedModel(module.eval(), spec, None, metrics, task=task)


def _load_hf(
    spec: str,
    recorded: str | None,
    ckpt: dict[str, Any] | None,
    path: Path | None,
    trust_code: bool,
) -> LoadedModel:
    """A transformers causal LM (``hf:``); a checkpoint's weights replace the folder's."""
    if not is_hf_spec(spec) or (recorded is not None and not is_hf_spec(recorded)):
        raise BadInput(
            f"checkpoint '{path}' was saved for model '{recorded}', not '{spec}'; "
            "drop the spec or match it"
        )
    wanted = parse_hf_spec(spec)
    module = build_hf_model(wanted, trust_code=trust_code)
    if ckpt is not None and path is not None:
        _load_state(module, ckpt["state_dict"], path, wanted.identity)
    metrics = dict(ckpt.get("metrics", {})) if ckpt else {}
    origin = f"transformers {module.model_type} from {wanted.source}"
    return LoadedModel(module.eval(), wanted.identity, None, metrics, task=HF_TASK, origin=origin)


def _load_vision(
    spec: str, recorded: str | None, ckpt: dict[str, Any] | None, path: Path | None
) -> LoadedModel:
    """A timm/torchvision classifier; a checkpoint's recorded spec supplies ``num_classes``
    when the given spec leaves it out, so ``-c`` alone reloads what `train` saved."""

    def mismatch() -> BadInput:
        return BadInput(
            f"checkpoint '{path}' was saved for model '{recorded}', not '{spec}'; "
            "drop the spec or match it"
        )

    if not is_vision_spec(spec):
        raise mismatch()
    wanted = parse_vision_spec(spec)
    if recorded is not None:
        if not is_vision_spec(recorded):
            raise mismatch()
        saved = parse_vision_spec(recorded)
        same_classes = None in (wanted.num_classes, saved.num_classes) or (
            wanted.num_classes == saved.num_classes
        )
        if (saved.library, saved.name) != (wanted.library, wanted.name) or not same_classes:
            raise mismatch()
        wanted = replace(wanted, num_classes=wanted.num_classes or saved.num_classes)
    if wanted.pretrained and ckpt is not None:
        raise BadInput(
            f"--pretrained and checkpoint '{path}' both give the weights of "
            f"{wanted.identity}: pass one"
        )
    module = build_vision_model(wanted)
    if ckpt is not None and path is not None:
        classes = head_mismatch(module, ckpt["state_dict"])
        if classes is not None:
            raise BadInput(
                f"checkpoint '{path}' holds a {classes}-class head, but {wanted.identity} "
                f"is built with another count: pass --num-classes {classes}"
            )
        _load_state(module, ckpt["state_dict"], path, wanted.identity)
    metrics = dict(ckpt.get("metrics", {})) if ckpt else {}
    origin = (
        f"{wanted.library} pretrained" if wanted.pretrained else f"{wanted.library} random init"
    )
    return LoadedModel(
        module.eval(), wanted.identity, None, metrics, task=VISION_TASK, origin=origin
    )


def load_model(
    spec: str | None,
    checkpoint: str | os.PathLike[str] | None = None,
    *,
    trust_code: bool = False,
    pretrained: bool = True,
) -> LoadedModel:
    """Resolve a model: zoo spec (+ checkpoint or shipped weights), 'pkg.mod:fn', '.pt2', or
    'timm:NAME' / 'torchvision:NAME' (+ checkpoint, or ``:pretrained=true`` in the spec).

    With spec None the checkpoint's recorded spec is used. A bare path to a .pt/.pth file
    given as the spec is taken as the checkpoint.
    """
    if spec is not None and not spec.strip():
        spec = None
    if spec is None and checkpoint is None:
        raise BadInput(
            "no model given: pass a zoo spec, 'pkg.module:factory', 'timm:NAME', "
            "'torchvision:NAME', 'hf:FOLDER_OR_ID', a .pt2 file or a checkpoint"
        )
    if spec is not None and spec.strip().endswith(".pt2"):
        if checkpoint is not None:
            raise BadInput(f"'{spec}' carries its own weights; drop the checkpoint")
        return _load_exported(Path(spec.strip()))
    if spec is not None and checkpoint is None and spec.strip().endswith((".pt", ".pth")):
        spec, checkpoint = None, spec.strip()

    path = Path(checkpoint) if checkpoint is not None else None
    ckpt = _read_any(path, trust_code) if path is not None else None
    if isinstance(ckpt, nn.Module):  # trusted full pickle of a whole model
        label = spec.strip() if spec else str(path)
        return LoadedModel(ckpt.eval(), label, None, {})

    recorded = ckpt.get("spec") if ckpt else None
    if spec is None:
        if recorded is None:
            raise BadInput(f"checkpoint '{path}' records no model spec; pass one")
        spec = recorded
    if is_hf_spec(spec) or is_hf_spec(recorded):
        return _load_hf(spec, recorded, ckpt, path, trust_code)
    if is_vision_spec(spec) or is_vision_spec(recorded):
        return _load_vision(spec, recorded, ckpt, path)
    if is_factory_spec(spec):
        return _load_factory(spec, ckpt, path, trust_code)

    canon = canonical_spec(spec)
    if recorded is not None and not is_factory_spec(recorded) and canonical_spec(recorded) != canon:
        raise BadInput(
            f"checkpoint '{path}' was saved for model '{recorded}', not '{canon}'; "
            "drop the spec or match it"
        )
    module = build_model(canon)
    if ckpt is None and pretrained:
        weights = shipped_weights(canon)
        if weights is not None:
            path, ckpt = weights, load_checkpoint(weights)
    if ckpt is not None and path is not None:
        _load_state(module, ckpt["state_dict"], path, canon)
    name, _ = parse_spec(canon)
    metrics = dict(ckpt.get("metrics", {})) if ckpt else {}
    return LoadedModel(module.eval(), canon, get_info(name), metrics)
