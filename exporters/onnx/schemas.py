"""The `edgegate` ONNX domain: one table of op signatures, and their onnx.defs schemas.

The schemas exist so that onnxscript's Opset can emit a *bare* custom node with two
outputs from a translation (an onnxscript function would be inlined by the exporter),
and so that the checker in the exporting process knows the attributes. A consumer's
fresh process validates the node through the model-local function instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from onnx import defs
from onnxscript import values

DOMAIN = "edgegate"
VERSION = 1
PLUGIN_ATTRS: dict[str, str] = {"plugin_namespace": DOMAIN, "plugin_version": "1"}
FLOAT_TYPES = ["tensor(float)", "tensor(float16)", "tensor(bfloat16)", "tensor(double)"]


@dataclass(frozen=True)
class OpSignature:
    """One gated-scan op as an ONNX node: inputs in order (h0 always last), two outputs."""

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, str]
    has_scale: bool

    @property
    def attributes(self) -> list[str]:
        """Attribute names the node carries and its fallback function declares."""
        return (["scale"] if self.has_scale else []) + list(PLUGIN_ATTRS)


OPS: dict[str, OpSignature] = {
    sig.name: sig
    for sig in (
        OpSignature("GatedLinearScan", ("x", "g", "h0"), ("y", "state"), has_scale=False),
        OpSignature("GatedLinearAttention", ("q", "k", "v", "g", "h0"), ("o", "state"), True),
        OpSignature("GatedDeltaRule", ("q", "k", "v", "g", "beta", "h0"), ("o", "state"), True),
    )
}


def _schema(sig: OpSignature) -> defs.OpSchema:
    param = defs.OpSchema.FormalParameter
    optional = defs.OpSchema.FormalParameterOption.Optional
    attr, kind = defs.OpSchema.Attribute, defs.OpSchema.AttrType
    attrs = [
        attr("plugin_namespace", kind.STRING, "TensorRT plugin namespace", required=False),
        attr("plugin_version", kind.STRING, "TensorRT plugin version", required=False),
    ]
    if sig.has_scale:
        # required: edgegate's default (K**-0.5) depends on K, so the node always states it
        attrs.append(attr("scale", kind.FLOAT, "query scale", required=True))
    return defs.OpSchema(
        sig.name,
        DOMAIN,
        VERSION,
        doc=f"edgegate::{sig.name}; see edgegate.ops for the recurrence",
        inputs=[
            param(n, "T", param_option=optional) if n == "h0" else param(n, "T")
            for n in sig.inputs
        ],
        outputs=[param(n, "T") for n in sig.outputs],
        type_constraints=[("T", FLOAT_TYPES, "float tensors")],
        attributes=attrs,
    )


def register_schemas() -> None:
    """Register each schema once per process (onnx.defs raises on a duplicate)."""
    for sig in OPS.values():
        if not defs.has(sig.name, DOMAIN):
            defs.register_schema(_schema(sig))


register_schemas()
EDGEGATE_OPSET = values.Opset(DOMAIN, VERSION)  # resolves ops through onnx.defs.get_schema
