"""Read an ML Program's protobuf and weight blobs into plain Python: ops, bindings and arrays.

The spec is walked directly (no MIL builder, no type inference), so parsing is cheap and every
value keeps the dtype the program declares. Weight blobs follow the MIL blob storage layout: a
64-byte file header, then per blob a 64-byte metadata record (sentinel 0xDEADBEEF, data type,
size in bytes, data offset, padding bits) that a `BlobFileValue.offset` points at.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgegate.errors import BackendUnavailable, BadInput
from edgegate.runtime.coreml_emulator._registry import UnsupportedMILOp

# MIL DataType enum value -> (name, numpy storage dtype, bits for sub-byte packed types).
_DTYPES: dict[int, tuple[str, Any, int]] = {
    1: ("bool", np.bool_, 0),
    2: ("string", object, 0),
    10: ("fp16", np.float16, 0),
    11: ("fp32", np.float32, 0),
    12: ("fp64", np.float64, 0),
    21: ("int8", np.int8, 0),
    22: ("int16", np.int16, 0),
    23: ("int32", np.int32, 0),
    24: ("int64", np.int64, 0),
    25: ("int4", np.int8, 4),
    31: ("uint8", np.uint8, 0),
    32: ("uint16", np.uint16, 0),
    33: ("uint32", np.uint32, 0),
    34: ("uint64", np.uint64, 0),
    35: ("uint4", np.uint8, 4),
    36: ("uint2", np.uint8, 2),
    37: ("uint1", np.uint8, 1),
    38: ("uint6", np.uint8, 6),
    39: ("uint3", np.uint8, 3),
}

# `cast`'s dtype strings (and the names above) -> numpy dtype.
NUMPY_DTYPES: dict[str, Any] = {name: dt for name, dt, bits in _DTYPES.values() if not bits}
NUMPY_DTYPES.update({"float16": np.float16, "float32": np.float32, "float64": np.float64})

_BLOB_SENTINEL = 0xDEADBEEF


@dataclass(frozen=True)
class TensorInfo:
    """A declared tensor type: MIL dtype name, numpy dtype, dims (None = unknown)."""

    dtype: str
    np_dtype: Any
    dims: tuple[int | None, ...] | None  # None: unknown rank


@dataclass(frozen=True)
class Binding:
    """An op argument: the name of a var, or a value fixed in the program."""

    name: str | None
    value: Any = None


@dataclass
class Op:
    type: str
    name: str
    inputs: dict[str, list[Binding]]
    outputs: list[tuple[str, TensorInfo | None]]
    has_blocks: bool = False
    nested_types: list[str] = field(default_factory=list)


@dataclass
class Function:
    inputs: list[tuple[str, TensorInfo]]
    ops: list[Op]
    outputs: list[str]
    opset: str


def import_coremltools() -> Any:
    try:
        import coremltools
    except ImportError:
        raise BackendUnavailable(
            "the Core ML emulator reads models with coremltools: pip install coremltools"
        ) from None
    return coremltools


def package_model_file(path: Path) -> Path:
    """The root model spec of an .mlpackage, found through its Manifest.json."""
    try:
        manifest = json.loads((path / "Manifest.json").read_text())
        entry = manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]
    except (OSError, ValueError, KeyError) as exc:
        raise BadInput(f"'{path}' is not a readable .mlpackage ({exc})") from None
    return path / "Data" / entry["path"]


def load_spec(model: Any) -> tuple[Any, Path | None]:
    """(Model protobuf, the folder that '@model_path/' names) from an MLModel or a path.

    A package path is read directly (loading it through MLModel rewrites its Manifest.json).
    """
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.exists():
            raise BadInput(f"'{path}' does not exist")
        ct = import_coremltools()
        if not path.is_dir():
            return ct.utils.load_spec(os.fspath(path)), None
        model_file = package_model_file(path)
        from coremltools.proto import Model_pb2

        spec = Model_pb2.Model()
        try:
            spec.ParseFromString(model_file.read_bytes())
        except Exception as exc:  # protobuf's DecodeError, or a missing file
            raise BadInput(f"'{model_file}' is not a Core ML model spec ({exc})") from None
        return spec, model_file.parent
    if not hasattr(model, "get_spec"):
        raise BadInput(f"expected a coremltools MLModel or an .mlpackage path, got {model!r}")
    weights_dir = getattr(model, "weights_dir", None)
    root = Path(weights_dir).parent if weights_dir else None
    return model.get_spec(), root


def tensor_info(value_type: Any) -> TensorInfo | None:
    """TensorInfo of a MIL ValueType; None for lists, tuples, dicts and states."""
    if value_type.WhichOneof("type") != "tensorType":
        return None
    tt = value_type.tensorType
    name, np_dtype, _ = _dtype(tt.dataType)
    if tt.rank < 0:
        return TensorInfo(name, np_dtype, None)
    dims = tuple(
        d.constant.size if d.WhichOneof("dimension") == "constant" else None for d in tt.dimensions
    )
    return TensorInfo(name, np_dtype, dims)


def _dtype(code: int) -> tuple[str, Any, int]:
    if code not in _DTYPES:
        raise NotImplementedError(f"MIL data type {code} is not supported by the emulator")
    return _DTYPES[code]


def unpack_bits(raw: bytes | np.ndarray, bits: int, count: int, signed: bool) -> np.ndarray:
    """Sub-byte values packed from each byte's least significant bit upward."""
    flat = np.unpackbits(np.frombuffer(raw, np.uint8), bitorder="little")
    flat = flat[: count * bits].reshape(count, bits).astype(np.int16)
    values = (flat << np.arange(bits, dtype=np.int16)).sum(axis=1)
    if signed:
        values = np.where(values >= 1 << (bits - 1), values - (1 << bits), values)
    return values.astype(np.int8 if signed else np.uint8)


class BlobReader:
    """Weight files opened once (memory-mapped); arrays are copied out on read."""

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self._files: dict[str, np.ndarray] = {}

    def _file(self, file_name: str) -> np.ndarray:
        if file_name not in self._files:
            prefix = "@model_path/"
            if not file_name.startswith(prefix) or self.root is None:
                raise BadInput(f"cannot resolve weight file '{file_name}'")
            path = self.root / file_name[len(prefix) :]
            if not path.is_file():
                raise BadInput(f"weight file '{path}' is missing")
            self._files[file_name] = np.memmap(path, dtype=np.uint8, mode="r")
        return self._files[file_name]

    def read(self, file_name: str, offset: int, info: TensorInfo) -> np.ndarray:
        data = self._file(file_name)
        sentinel, _, size, start = struct.unpack_from("<IIQQ", data, offset)
        if sentinel != _BLOB_SENTINEL:
            raise BadInput(f"'{file_name}' has no blob at offset {offset}")
        raw = data[start : start + size]
        if info.dims is None or None in info.dims:
            raise BadInput(f"blob at {file_name}:{offset} has no static shape")
        count = int(np.prod(info.dims, dtype=np.int64))
        _, np_dtype, bits = next(v for v in _DTYPES.values() if v[0] == info.dtype)
        if bits:
            flat = unpack_bits(raw, bits, count, signed=info.dtype.startswith("int"))
        else:
            flat = np.frombuffer(raw, dtype=np_dtype, count=count)
        return np.array(flat.reshape(info.dims))


def decode_value(value: Any, blobs: BlobReader) -> Any:
    """A MIL Value -> numpy array (0-d for scalars) or str; strings stay Python strings."""
    info = tensor_info(value.type)
    if info is None:
        raise NotImplementedError("only tensor values are supported by the emulator")
    kind = value.WhichOneof("value")
    if kind == "blobFileValue":
        return blobs.read(value.blobFileValue.fileName, value.blobFileValue.offset, info)
    tensor = value.immediateValue.tensor
    which = tensor.WhichOneof("value")
    dims = info.dims or ()
    if info.dtype == "string":
        items = list(tensor.strings.values)
        return items[0] if not dims else np.array(items, dtype=object).reshape(dims)
    _, _, bits = next(v for v in _DTYPES.values() if v[0] == info.dtype)
    count = int(np.prod(dims, dtype=np.int64))
    if which is None:
        flat = np.zeros(count, dtype=info.np_dtype)
    elif which == "bytes":
        raw = tensor.bytes.values
        if bits:
            flat = unpack_bits(raw, bits, count, signed=info.dtype.startswith("int"))
        else:
            flat = np.frombuffer(raw, dtype=info.np_dtype, count=count)
    else:
        flat = np.asarray(list(getattr(tensor, which).values))
    return np.array(flat, dtype=info.np_dtype).reshape(dims)


def _op_name(op: Any) -> str:
    attr = op.attributes.get("name")
    if attr is not None and attr.immediateValue.tensor.strings.values:
        return attr.immediateValue.tensor.strings.values[0]
    return op.outputs[0].name if op.outputs else op.type


def _nested_types(op: Any) -> list[str]:
    found: list[str] = []
    for block in op.blocks:
        for inner in block.operations:
            found.append(inner.type)
            found.extend(_nested_types(inner))
    return found


def _bindings(op: Any, blobs: BlobReader) -> dict[str, list[Binding]]:
    bindings: dict[str, list[Binding]] = {}
    for param, arg in op.inputs.items():
        bindings[param] = [
            Binding(b.name)
            if b.WhichOneof("binding") == "name"
            else Binding(None, decode_value(b.value, blobs))
            for b in arg.arguments
        ]
    for param, value in op.attributes.items():
        if param != "name":
            bindings[param] = [Binding(None, decode_value(value, blobs))]
    return bindings


def parse_function(spec: Any, function: str, blobs: BlobReader) -> Function:
    """The named function of the spec's ML Program, its values decoded."""
    if spec.WhichOneof("Type") != "mlProgram":
        raise BadInput(f"not an ML Program (model type '{spec.WhichOneof('Type')}')")
    functions = spec.mlProgram.functions
    if function not in functions:
        raise BadInput(f"no function '{function}' in the program (has: {', '.join(functions)})")
    fn = functions[function]
    block = fn.block_specializations[fn.opset]
    inputs: list[tuple[str, TensorInfo]] = []
    for var in fn.inputs:
        info = tensor_info(var.type)
        if info is None:
            raise NotImplementedError(
                f"input '{var.name}' is not a tensor (state inputs are "
                "not supported by the emulator)"
            )
        inputs.append((var.name, info))
    ops = []
    for op in block.operations:
        try:
            bindings = _bindings(op, blobs)
        except NotImplementedError as exc:
            raise UnsupportedMILOp(op.type, _op_name(op), str(exc)) from None
        outputs = [(o.name, tensor_info(o.type)) for o in op.outputs]
        ops.append(
            Op(op.type, _op_name(op), bindings, outputs, len(op.blocks) > 0, _nested_types(op))
        )
    return Function(inputs, ops, list(block.outputs), fn.opset)


def op_types(spec: Any, function: str) -> list[str]:
    """Every op type in a function (nested blocks included), without decoding any value."""
    fn = spec.mlProgram.functions[function]
    found: list[str] = []
    for op in fn.block_specializations[fn.opset].operations:
        found.append(op.type)
        found.extend(_nested_types(op))
    return found
