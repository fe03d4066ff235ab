"""Tensor shapes inside an ONNX graph, from shape inference (and an example where dims vary)."""

from __future__ import annotations

import onnx


def _specialised(model: onnx.ModelProto, example_shapes: list[list[int]]) -> onnx.ModelProto:
    """A copy whose graph inputs have the example's concrete shapes, for shape inference only."""
    copy = onnx.ModelProto.FromString(model.SerializeToString())
    for value, shape in zip(copy.graph.input, example_shapes, strict=False):
        dims = value.type.tensor_type.shape.dim
        if len(dims) != len(shape):
            continue
        for dim, size in zip(dims, shape, strict=True):
            dim.Clear()
            dim.dim_value = int(size)
    return copy


def _inferred(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    m = onnx.shape_inference.infer_shapes(model)
    out = {}
    for vi in list(m.graph.input) + list(m.graph.value_info) + list(m.graph.output):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            out[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    return out


def static_dims(
    model: onnx.ModelProto, example_shapes: list[list[int]] | None = None
) -> dict[str, list[int | None]]:
    """Every inferred tensor shape by name (None for a dynamic dim). With ``example_shapes``
    (the graph inputs' shapes, in order), dims the graph leaves symbolic are filled in from
    the example, which fixes head counts and head dims for static checks."""
    dims = _inferred(model)
    if example_shapes is not None:
        dims |= _inferred(_specialised(model, example_shapes))
    return dims
