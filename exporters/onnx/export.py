"""export_onnx: a torch module -> one checked ONNX file, custom gated-scan nodes kept whole."""

from __future__ import annotations

import io
import logging
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from edgegate import __version__
from edgegate.atomic import atomic_write
from edgegate.dims import dim_name, shapes_for_signature
from edgegate.errors import (
    BadInput,
    EdgegateError,
    InternalError,
    ToolchainFailed,
    raised_in_edgegate,
)
from edgegate.exporters.onnx.functions import attach_functions, iter_nodes
from edgegate.exporters.onnx.global_pool import global_average_pools
from edgegate.exporters.onnx.lowering import lower_to_ort_linear_attention
from edgegate.exporters.onnx.schemas import DOMAIN, translation_table
from edgegate.exporters.onnx.weight_only import WeightOnlyForm, lower_weight_only
from edgegate.manifest import InputSpec
from edgegate.models.checkpoint import export_failure

LOWERINGS = ("onnxruntime",)


def auto_dynamic_shapes(
    args: tuple[Any, ...],
    module: nn.Module | None = None,
    dynamic_dims: Sequence[Iterable[int]] | None = None,
) -> tuple[Any, ...]:
    """Dim.AUTO on every dim (or on ``dynamic_dims[i]`` of input i, the rest static): batch and
    sequence length vary at run time wherever they can.

    torch.export wants a ``forward(x, *states)`` varargs tail as one nested tuple.
    """

    def dims_of(i: int, a: Any) -> dict[int, Any] | None:
        if not isinstance(a, torch.Tensor):
            return None
        chosen = range(a.dim()) if dynamic_dims is None else dynamic_dims[i]
        return {d: torch.export.Dim.AUTO for d in chosen}

    dims = tuple(dims_of(i, a) for i, a in enumerate(args))
    return dims if module is None else shapes_for_signature(module.forward, dims)


def export_onnx(
    module: nn.Module,
    args: tuple[Any, ...],
    path: str | os.PathLike[str],
    *,
    lower: str | None = None,
    input_names: list[str] | None = None,
    output_names: list[str] | None = None,
    dynamic_shapes: Any = None,
    metadata: dict[str, str] | None = None,
    weight_only: WeightOnlyForm | None = None,
) -> Path:
    """Export with the dynamo exporter; attach fallback functions; optionally lower; check; save.

    ``weight_only``: the form weight-only (W4) layers take (``exporters.onnx.weight_only``);
    a graph holding such layers needs one.

    The file is written atomically, so a failed export leaves nothing at ``path``.
    """
    if lower is not None and lower not in LOWERINGS:
        raise BadInput(f"unknown lowering '{lower}': expected one of {', '.join(LOWERINGS)}")
    path = Path(path)
    try:
        with warnings.catch_warnings(), _quiet():
            warnings.simplefilter("ignore")
            logging.getLogger("torch.onnx").setLevel(logging.ERROR)
            program = torch.onnx.export(
                module.eval(),
                tuple(args),
                dynamo=True,
                custom_translation_table=translation_table(),
                dynamic_shapes=auto_dynamic_shapes(args, module)
                if dynamic_shapes is None
                else dynamic_shapes,
                input_names=input_names,
                output_names=output_names,
                optimize=True,
                verbose=False,
            )
    except EdgegateError:
        raise
    except Exception as exc:
        raise export_error(module, exc) from exc
    model = global_average_pools(attach_functions(program.model_proto))
    name_dims(model, _flat_tensors(tuple(args)))
    if weight_only is not None:  # before the scan lowering, which takes only scan nodes
        model = lower_weight_only(model, weight_only)
    if lower == "onnxruntime":
        shapes = [list(a.shape) for a in _flat_tensors(args)]
        model = lower_to_ort_linear_attention(model, example_shapes=shapes)
    props = {"edgegate_version": __version__, **(metadata or {})}
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=str(value)))
    model.producer_name = "edgegate"
    model.producer_version = __version__
    onnx.checker.check_model(model, full_check=True)
    with atomic_write(path) as fh:
        fh.write(model.SerializeToString())
    return path


def name_dims(model: onnx.ModelProto, args: Sequence[torch.Tensor]) -> None:
    """Rename the exporter's symbols (``s52``) to edgegate's dim names (``batch``, ``seq_len``,
    ``height``...), in place, wherever the graph's inputs, outputs and value infos use them:
    every target names a dim alike."""
    renames: dict[str, str] = {}
    for value, arg in zip(model.graph.input, args, strict=False):
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.dim_param and dim.dim_param not in renames:
                name = dim_name(value.name, arg.dim(), arg.is_floating_point(), axis)
                renames[dim.dim_param] = name
    if not renames:
        return
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, renames)) + r")\b")
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_param = pattern.sub(lambda m: renames[m.group(0)], dim.dim_param)


def _flat_tensors(args: tuple[Any, ...]) -> list[torch.Tensor]:
    """Tensor arguments in the order the exporter makes them graph inputs."""
    flat: list[torch.Tensor] = []
    for a in args:
        if isinstance(a, torch.Tensor):
            flat.append(a)
        elif isinstance(a, tuple | list):
            flat.extend(_flat_tensors(tuple(a)))
    return flat


def export_error(module: nn.Module, exc: Exception) -> Exception:
    """Whose fault a failed ``torch.onnx.export`` is, by where it failed.

    - edgegate's code raised (its ops, a zoo model, its translation functions), or an
      edgegate op has no ONNX translation: InternalError;
    - torch.export could not capture the module (data-dependent branches, an op torch.export
      lacks, a shape the model's code contradicts), or the model uses an op of its own that
      torch.onnx has no translation for: the user's model, BadInput (or the internal
      ReexportFailed for a loaded program, see ``export_failure``);
    - any other failure to translate the captured graph: torch.onnx's, ToolchainFailed;
    - anything else is edgegate's (InternalError).
    """
    chain = [exc]
    while isinstance(chain[-1].__cause__, Exception) and len(chain) < 16:
        chain.append(chain[-1].__cause__)
    ours = [e for e in chain if isinstance(e, EdgegateError)]
    if ours:  # raised while tracing, and wrapped by torch.onnx
        return ours[-1]
    name, summary = type(module).__name__, _summary(exc)
    if raised_in_edgegate(chain[-1]):
        return InternalError(f"ONNX export of {name} failed in edgegate's code: {summary}")
    stages = {cls.__name__: e for e in reversed(chain) for cls in type(e).__mro__}
    if "TorchExportError" in stages:
        return export_failure(module, f"ONNX export of {name} failed: {summary}")
    if "DispatchError" in stages:  # no ONNX function for an op of the captured graph
        if "op='edgegate." in str(stages["DispatchError"]):
            return InternalError(
                f"ONNX export of {name}: an edgegate op has no ONNX form: {summary}"
            )
        return BadInput(f"{name} uses an op torch.onnx cannot translate: {summary}")
    if "ConversionError" in stages:
        return ToolchainFailed(f"torch.onnx could not translate {name} to ONNX: {summary}")
    return InternalError(f"ONNX export of {name} failed: {type(exc).__name__}: {summary}")


def _summary(exc: Exception) -> str:
    """The informative line of a torch.onnx error (its first line is boilerplate)."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(exc).splitlines()]
    lines = [line for line in lines if line]
    if "## Exception summary" in lines[:-1]:
        return lines[lines.index("## Exception summary") + 1]
    return lines[0] if lines else type(exc).__name__


class _quiet:
    """The exporter prints progress to stdout; keep CLI --json output clean."""

    def __enter__(self) -> None:
        import contextlib

        self._stack = contextlib.ExitStack()
        self._stack.enter_context(contextlib.redirect_stdout(io.StringIO()))

    def __exit__(self, *exc: object) -> None:
        self._stack.close()


def graph_inputs(path: str | os.PathLike[str]) -> list[InputSpec]:
    """Name, shape (symbolic dims by name) and dtype of each graph input of an ONNX file."""
    model = onnx.load(os.fspath(path), load_external_data=False)
    specs = []
    for value in model.graph.input:
        tensor = value.type.tensor_type
        shape: list[int | str] = [
            d.dim_param or (d.dim_value if d.HasField("dim_value") else "?")
            for d in tensor.shape.dim
        ]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
        specs.append(InputSpec(value.name, shape, dtype))
    return specs


def load_model(path: str | os.PathLike[str]) -> onnx.ModelProto:
    """Load an ONNX file; a missing or corrupt one is BadInput, not a protobuf traceback."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"'{path}' does not exist")
    try:
        return onnx.load(os.fspath(path))
    except Exception as exc:
        raise BadInput(f"'{path}' is not a valid ONNX file ({type(exc).__name__})") from None


def custom_ops_used(model: onnx.ModelProto | str | os.PathLike[str]) -> list[str]:
    """The gated-scan op types left as custom nodes (or lowered to LinearAttention)."""
    if not isinstance(model, onnx.ModelProto):
        model = load_model(model)
    found = {
        f"{n.domain}.{n.op_type}"
        for n in iter_nodes(model.graph)
        if n.domain in (DOMAIN, "com.microsoft")
    }
    return sorted(found)
