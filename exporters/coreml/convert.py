"""Exported program -> Core ML ML Program (.mlpackage): fp16 compute with fp32 scans, int8
weights, names and metadata.

fp16 is Core ML's fast path on the GPU and Neural Engine, but the scans' cumsum of log gates
and exp of their differences lose too much in fp16, so the ops that a scan's decomposition made
stay fp32; so do an MoE router's scores and top-k, whose discrete choice fp16 rounding flips.
INT8 weights are per-channel symmetric constexprs (iOS17+): only weights that edgegate's
quantizer put on an int8 grid are stored as int8, so scan projections kept float stay float.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from edgegate import __version__
from edgegate.exporters.coreml.quiet import coremltools, quiet

DEPLOYMENT_TARGET = "iOS17"  # int8 constexpr weights and flexible shapes
GRID_TOLERANCE = 0.1  # |w / step - round(w / step)| of every weight of a channel on the grid


def _ct():
    return coremltools()


def convert(
    program: torch.export.ExportedProgram,
    *,
    precision: str,
    keep_fp32: Iterable[str] = (),
    deployment_target: str = DEPLOYMENT_TARGET,
):
    """The ML Program of ``program``; ``keep_fp32`` names nodes that stay fp32 under fp16.
    ``deployment_target`` is coremltools' name of the oldest OS it runs on (iOS18 for int4
    per-block weights, ``constexpr_blockwise_shift_scale``)."""
    ct = _ct()
    if precision == "fp16":
        keep = set(keep_fp32)
        graph_names = {node.name for node in program.graph.nodes}
        compute = ct.transform.FP16ComputePrecision(
            op_selector=lambda op: _in_fp16(op, keep, graph_names)
        )
    else:
        compute = ct.precision.FLOAT32
    with quiet():
        model = ct.convert(
            program,
            convert_to="mlprogram",
            minimum_deployment_target=getattr(ct.target, deployment_target),
            compute_precision=compute,
        )
    return model


def _in_fp16(op, keep: set[str], graph_names: set[str]) -> bool:
    """False for ops of a scan region, including helper ops the converter added inside it
    (named after no graph node, fed by a region op); the selector sees ops in program order."""
    if op.name in keep:
        return False
    if op.name not in graph_names:
        producers = [v.op for v in op.inputs.values() if hasattr(v, "op") and v.op is not None]
        if any(p.name in keep for p in producers):
            keep.add(op.name)
            return False
    return True


def rename(model, input_names: list[str], output_names: list[str]):
    """Inputs and outputs named as edgegate names them (the converter uses graph node names)."""
    ct = _ct()
    spec = model.get_spec()
    old_inputs = [i.name for i in spec.description.input]
    old_outputs = [o.name for o in spec.description.output]
    if len(old_inputs) != len(input_names) or len(old_outputs) != len(output_names):
        raise ValueError(
            f"converted program has inputs {old_inputs} and outputs {old_outputs}; "
            f"expected {input_names} and {output_names}"
        )
    pairs = [
        *zip(old_inputs, input_names, strict=True),
        *zip(old_outputs, output_names, strict=True),
    ]
    for old, new in pairs:
        if old != new:
            ct.utils.rename_feature(spec, old, new)
    return ct.models.MLModel(spec, weights_dir=model.weights_dir)


def quantize_grid_weights(model):
    """Store as per-channel int8 every float weight whose channels lie on a symmetric int8 grid
    (what edgegate's quantizer left there); returns (model, names of the int8 weights)."""
    ct = _ct()
    program = model._mil_program
    names = [
        op.name
        for function in program.functions.values()
        for op in function.operations
        if op.op_type == "const" and _on_int8_grid(op.outputs[0].val)
    ]
    if not names:
        return model, []
    config = ct.optimize.coreml.OpLinearQuantizerConfig(
        mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=1
    )
    opt = ct.optimize.coreml.OptimizationConfig(op_name_configs=dict.fromkeys(names, config))
    with quiet():
        return ct.optimize.coreml.linear_quantize_weights(model, opt), names


def _on_int8_grid(value: object) -> bool:
    if not isinstance(value, np.ndarray) or value.ndim < 2 or value.dtype.kind != "f":
        return False
    w = value.astype(np.float32).reshape(value.shape[0], -1)
    step = np.abs(w).max(axis=1, keepdims=True) / 127.0
    if not (step > 0).all() or w.shape[1] < 4:
        return False
    units = w / step
    return bool((np.abs(units - np.round(units)) <= GRID_TOLERANCE).all())


def describe(model, metadata: dict[str, str], input_docs: dict[str, str]) -> None:
    """Author, description, version, edgegate's metadata and input descriptions, in place."""
    model.author = "edgegate"
    model.short_description = (
        f"{metadata.get('model', 'model')} ({metadata.get('part', 'model')}) exported by edgegate"
    )
    model.version = __version__
    for key, value in {"edgegate_version": __version__, **metadata}.items():
        model.user_defined_metadata[key] = str(value)
    for name, doc in input_docs.items():
        model.input_description[name] = doc


def save(model, path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    model.save(os.fspath(path))
    return path
