"""What Linux can check in a Core ML package: op types, dtypes, shape ranges, int8 and int4
weights.

`MLModel(path)` loads here (predict does not), and the ML Program's protobuf names every op,
every input's shape range and every constexpr weight.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgegate.dims import dim_name
from edgegate.manifest import InputSpec

CONSTEXPR_INT8 = ("constexpr_affine_dequantize", "constexpr_blockwise_shift_scale")
_DTYPES = {65568: "float32", 65552: "float16", 131104: "int32", 65600: "float64"}


def load(path: str | os.PathLike[str]):
    from edgegate.exporters.coreml.quiet import coremltools, quiet

    ct = coremltools()
    with quiet():
        return ct.models.MLModel(os.fspath(path), skip_model_load=True)


def op_counts(model) -> Counter[str]:
    """How many ops of each type the package's main function holds (nested blocks included)."""
    spec = model.get_spec()
    counts: Counter[str] = Counter()

    def walk(block) -> None:
        for op in block.operations:
            counts[op.type] += 1
            for nested in op.blocks:
                walk(nested)

    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            walk(block)
    return counts


def package_inputs(path: str | os.PathLike[str]) -> list[InputSpec]:
    """Inputs as the manifest records them: a flexible dim gets edgegate's dim name (its range
    is in ``package_ranges``)."""
    specs = []
    for name, shape, dtype, ranges in _inputs(path):
        floating = dtype.startswith("float")
        specs.append(
            InputSpec(
                name,
                [
                    dim_name(name, len(shape), floating, axis) if axis in ranges else size
                    for axis, size in enumerate(shape)
                ],
                dtype,
            )
        )
    return specs


def package_ranges(path: str | os.PathLike[str]) -> dict[str, dict[int, tuple[int, int | None]]]:
    """Each input's flexible dims: axis -> (low, high), high None when unbounded."""
    return {name: ranges for name, _, _, ranges in _inputs(path)}


def _inputs(path: str | os.PathLike[str]):
    spec = load(path).get_spec()
    for feature in spec.description.input:
        array = feature.type.multiArrayType
        bounds = list(array.shapeRange.sizeRanges)
        ranges: dict[int, tuple[int, int | None]] = {}
        for i, bound in enumerate(bounds[: len(array.shape)]):
            if bound.lowerBound != bound.upperBound:
                high = int(bound.upperBound)
                ranges[i] = (int(bound.lowerBound), high if high > 0 else None)
        shape = [int(size) for size in array.shape]
        yield feature.name, shape, _DTYPES.get(array.dataType, "unknown"), ranges


def int8_weight_ops(model) -> list[str]:
    """Names of the constexpr ops that store int8 weights."""
    spec = model.get_spec()
    names = []
    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            for op in block.operations:
                if op.type in CONSTEXPR_INT8:
                    names.append(op.outputs[0].name)
    return names


def package_size(path: str | os.PathLike[str]) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def output_names(path: str | os.PathLike[str]) -> list[str]:
    return [o.name for o in load(path).get_spec().description.output]


@dataclass(frozen=True)
class BlockwiseWeight:
    """One iOS18 ``constexpr_blockwise_shift_scale`` as the saved package holds it:
    weight = scale * (data - offset), each scale and offset entry covering one block."""

    name: str
    data_type: str  # MIL's name: int4, uint4, int8, uint8
    data: np.ndarray  # the integer values (int4 held in int8)
    scale: np.ndarray  # in its stored dtype (float16 in an fp16 program, else float32)
    offset: np.ndarray | None


def blockwise_weights(path: str | os.PathLike[str]) -> list[BlockwiseWeight]:
    """Every ``constexpr_blockwise_shift_scale`` of the package's program, read back through
    coremltools' own MIL loader (blob file values materialise as numpy), in program order."""
    from edgegate.exporters.coreml.quiet import coremltools, quiet

    coremltools()  # imported quietly first
    from coremltools.converters.mil.frontend.milproto.load import load as load_mil
    from coremltools.converters.mil.mil import types

    model = load(path)
    spec = model.get_spec()
    with quiet():
        program = load_mil(spec, spec.specificationVersion, model.weights_dir)
    found = []
    for function in program.functions.values():
        for op in function.operations:
            if op.op_type != "constexpr_blockwise_shift_scale":
                continue
            offset = op.offset.val if op.offset is not None else None
            found.append(
                BlockwiseWeight(
                    op.outputs[0].name,
                    types.builtin_to_string(op.data.dtype),
                    np.asarray(op.data.val),
                    np.asarray(op.scale.val),
                    None if offset is None else np.asarray(offset),
                )
            )
    return found


def deployment_target(path: str | os.PathLike[str]) -> str:
    """The oldest OS the package declares (coremltools' target name, e.g. iOS18)."""
    from edgegate.exporters.coreml.quiet import coremltools

    ct = coremltools()
    version = load(path).get_spec().specificationVersion
    names = [t.name for t in ct.target if t.value == version]
    return names[0] if names else f"specification {version}"
