"""Read the XNNPACK graphs back out of a saved .pte: what each delegated linear really runs.

A lowered program can look right in its edge graph and still carry other weights than the
model's (a re-quantization on the way, a scale stored in another dtype). This reads the file
itself: the program's delegate blobs (``executorch.exir._serialize._program``), each blob's
XNNPACK flatbuffer (decoded to JSON by the ``flatc`` ExecuTorch ships and serialises with),
and the named constants the graph points at. Layouts follow ExecuTorch 1.5.1's XNNPACK
serialiser (``backends/xnnpack/operators/node_visitor.py``): 4-bit weights as ``code + 8``
nibbles, two per byte, low nibble first, each row padded to an even count; group scales as
bfloat16.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from edgegate.libs import import_optional

XNNPACK_BACKEND = "XnnpackBackend"
_NON_FINITE = re.compile(r"(:\s*)(-?(?:inf|nan))\b")
_NO_ID = 0xFFFFFFFF  # XNNPACK's id for "none" (a fully connected layer without bias)


@dataclass(frozen=True)
class DelegatedLinear:
    """One XNNPACK fully connected node: its input and filter datatypes and, for 4-bit
    groupwise filters (``xnn_datatype_qbint4``), the codes and scales it stores."""

    input_dtype: str
    filter_dtype: str
    shape: tuple[int, int]  # [out, in]
    group_size: int | None = None
    codes: torch.Tensor | None = None  # int8 [out, in], in [-8, 7]
    scales: torch.Tensor | None = None  # float32 [out, in // group_size], from bfloat16
    has_bias: bool = False


def _decode_graph(flatbuffer: bytes) -> dict[str, Any]:
    """XNNPACK's flatbuffer as JSON, through the schema and flatc ExecuTorch ships."""
    flatbuffers = import_optional("executorch.exir._serialize._flatbuffer")
    schema_package = import_optional("executorch.backends.xnnpack.serialization")
    with tempfile.TemporaryDirectory(prefix="edgegate-xnn-") as folder:
        schema = os.path.join(folder, "schema.fbs")
        Path(schema).write_bytes(
            resources.files(schema_package).joinpath("schema.fbs").read_bytes()
        )
        blob = os.path.join(folder, "graph.bin")
        Path(blob).write_bytes(flatbuffer)
        flatbuffers._flatc_decompile(folder, schema, blob)
        text = Path(folder, "graph.json").read_text()
    # flatc writes unbounded output ranges as bare inf, which JSON has no literal for
    return json.loads(_NON_FINITE.sub(r'\1"\2"', text))


def _named_bytes(pte: Any) -> dict[str, bytes]:
    named = pte.named_data
    if named is None:
        return {}
    out = {}
    for key, entry in named.pte_data.items():
        buffer = named.buffers[entry.buffer_index]
        out[key] = buffer if isinstance(buffer, bytes) else bytes(buffer.to_bytes())
    return out


def unpack_int4(packed: bytes, rows: int, columns: int) -> torch.Tensor:
    """int8 [rows, columns] codes from XNNPACK's ``code + 8`` nibbles (low nibble first)."""
    data = torch.frombuffer(bytearray(packed), dtype=torch.uint8)
    nibbles = torch.stack([data & 0x0F, data >> 4], dim=-1).reshape(-1)
    padded = columns + columns % 2
    return (nibbles[: rows * padded].reshape(rows, padded)[:, :columns].to(torch.int8)) - 8


def _values(graph: dict[str, Any]) -> list[dict[str, Any]]:
    """Each XNNPACK value's tensor fields plus its quantization, indexed by value id."""
    values = []
    for value in graph.get("xvalues", []):
        body = value["xvalue_union"]
        if value["xvalue_union_type"] == "XNNQuantizedTensorValue":
            values.append(
                {
                    **body["tensor_value"],
                    "quant_type": body.get("quant_params_type"),
                    "quant": body.get("quant_params", {}),
                }
            )
        else:
            values.append(dict(body))
    return sorted(values, key=lambda v: v["id_out"])


def _linears(
    graph: dict[str, Any], constants: dict[str, bytes], inline: bytes
) -> list[DelegatedLinear]:
    """The fully connected nodes of one graph; ``constants`` are the program's named data,
    ``inline`` the blob's own constant section (older programs keep weights there)."""
    values = {v["id_out"]: v for v in _values(graph)}
    data = graph.get("constant_data", [])

    def constant(index: int) -> bytes:
        entry = data[index]
        size = int(entry["size"])
        key = entry.get("named_key", "")
        if key:
            return constants[key][:size]
        start = int(entry["offset"])
        return inline[start : start + size]

    out = []
    for node in graph.get("xnodes", []):
        if node["xnode_union_type"] != "XNNFullyConnected":
            continue
        body = node["xnode_union"]
        source, weight = values[body["input1_id"]], values[body["filter_id"]]
        rows, columns = (int(d) for d in weight["dims"])
        linear = DelegatedLinear(
            source["datatype"],
            weight["datatype"],
            (rows, columns),
            has_bias=body.get("bias_id", _NO_ID) != _NO_ID,
        )
        if weight["datatype"] == "xnn_datatype_qbint4":
            quant = weight["quant"]
            group = int(quant["group_size"])
            scales = torch.frombuffer(
                bytearray(constant(int(quant["scale_buffer_idx"]))), dtype=torch.bfloat16
            )
            linear = DelegatedLinear(
                linear.input_dtype,
                linear.filter_dtype,
                linear.shape,
                group,
                unpack_int4(constant(int(weight["constant_buffer_idx"])), rows, columns),
                scales.float().reshape(rows, columns // group),
                linear.has_bias,
            )
        out.append(linear)
    return out


def delegated_linears(pte: bytes | str | os.PathLike[str]) -> list[DelegatedLinear]:
    """Every fully connected node of every XNNPACK delegate in the program ``pte`` (its bytes
    or its path), in program order."""
    program_io = import_optional("executorch.exir._serialize._program")
    header = import_optional("executorch.backends.xnnpack.serialization.xnnpack_graph_serialize")
    raw = pte if isinstance(pte, bytes) else Path(pte).read_bytes()
    parsed = program_io.deserialize_pte_binary(raw)
    constants = _named_bytes(parsed)
    program = parsed.program
    out: list[DelegatedLinear] = []
    for plan in program.execution_plan:
        for delegate in plan.delegates:
            if delegate.id != XNNPACK_BACKEND:
                continue
            blob = program.backend_delegate_data[delegate.processed.index].data
            head = header.XNNHeader.from_bytes(blob[: header.XNNHeader.EXPECTED_LENGTH])
            start = head.flatbuffer_offset
            graph = _decode_graph(blob[start : start + head.flatbuffer_size])
            inline = blob[
                head.constant_data_offset : head.constant_data_offset + head.constant_data_size
            ]
            out.extend(_linears(graph, constants, inline))
    return out
