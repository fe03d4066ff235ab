"""The arithmetic of feeding a TensorRT engine, kept free of TensorRT so it is tested anywhere.

TensorRT's Python API leaves to the caller what edgegate must get right on the device:
``IExecutionContext.set_input_shape`` returns False (no exception) for a shape outside the
optimisation profile; ``get_tensor_shape`` of an output keeps -1 dims until every input shape
is set; an engine takes its own dtypes (int32 tokens, half inputs of an fp16 engine), never
numpy's defaults; and one profile bounds the batch a call may carry. Each rule is one function
here, on plain tuples, names and arrays; ``TensorRTRunner`` applies them to the engine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgegate.errors import BadInput

# TensorRT's DataType member names -> numpy dtypes. BF16, FP8, INT4 and FP4 have no numpy
# dtype: an engine with such an I/O tensor cannot be fed from numpy and is refused by name.
NUMPY_DTYPES: dict[str, str] = {
    "FLOAT": "float32",
    "HALF": "float16",
    "INT8": "int8",
    "INT32": "int32",
    "INT64": "int64",
    "BOOL": "bool",
    "UINT8": "uint8",
}


def numpy_dtype(trt_type_name: str) -> np.dtype:
    """The numpy dtype of a TensorRT DataType, given its name (``DataType.HALF.name``)."""
    name = trt_type_name.rsplit(".", 1)[-1]  # "DataType.HALF" (str of the enum) or "HALF"
    if name not in NUMPY_DTYPES:
        raise BadInput(
            f"the engine has a {name} input or output, which numpy cannot hold "
            f"(runnable from Python: {', '.join(NUMPY_DTYPES)})"
        )
    return np.dtype(NUMPY_DTYPES[name])


def cast_feed(name: str, array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``array`` in the engine's ``dtype``, contiguous. Floats convert to floats (an fp16
    engine's half inputs); integers to integers when every value fits (int64 token ids into an
    int32 engine); any other conversion would change what the model is fed: BadInput."""
    array = np.asarray(array)
    dtype = np.dtype(dtype)
    if array.dtype == dtype:
        return np.ascontiguousarray(array)
    kinds = (array.dtype.kind, dtype.kind)
    if kinds[0] == "f" and kinds[1] == "f":
        return np.ascontiguousarray(array, dtype=dtype)
    if kinds[0] in "iub" and kinds[1] in "iu":
        info = np.iinfo(dtype)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise BadInput(
                f"input '{name}' holds values in [{array.min()}, {array.max()}], outside the "
                f"engine's {dtype.name} range"
            )
        return np.ascontiguousarray(array, dtype=dtype)
    if kinds == ("b", "b"):
        return np.ascontiguousarray(array)
    raise BadInput(f"input '{name}' is {array.dtype.name}; the engine takes {dtype.name}")


@dataclass(frozen=True)
class Profile:
    """One input's optimisation profile: the shapes ``set_input_shape`` accepts."""

    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def refusal(self, shape: tuple[int, ...]) -> str | None:
        """Why the profile refuses ``shape`` (one line naming input, shape and profile), or
        None when every dim lies within [min, max]."""
        shape = tuple(int(d) for d in shape)
        if len(shape) != len(self.min):
            reason = f"rank {len(shape)}, the profile's is {len(self.min)}"
        elif any(lo > d or d > hi for d, lo, hi in zip(shape, self.min, self.max, strict=True)):
            reason = "outside the profile"
        else:
            return None
        return (
            f"input '{self.name}' of shape {list(shape)} does not fit the engine "
            f"({reason}: min {list(self.min)}, max {list(self.max)})"
        )


def profile_batch_limit(profiles: list[Profile]) -> int | None:
    """The largest batch one call may carry: the smallest max over the inputs' first dims
    (None for an engine without inputs of rank 1 or more)."""
    tops = [p.max[0] for p in profiles if p.max]
    return min(tops) if tops else None


def batch_limit(declared: int | None, profile: int | None) -> int | None:
    """The rows per call: the tighter of the manifest's declared batch and the profile's."""
    known = [limit for limit in (declared, profile) if limit is not None and limit > 0]
    return min(known) if known else None


def resolved_shape(name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """An output's shape once every input shape is set; a dim still -1 (an output whose size
    depends on the data, or an input left unset) cannot be allocated: BadInput."""
    shape = tuple(int(d) for d in shape)
    if any(d < 0 for d in shape):
        raise BadInput(
            f"output '{name}' has shape {list(shape)} after the input shapes were set: TensorRT "
            "could not resolve it (a data-dependent output size needs an output allocator)"
        )
    return shape
