"""Model-local fallback functions: Scan decompositions so any ONNX runtime runs the nodes.

Pitfalls these bodies avoid (each one seen in onnxruntime 1.32): Scan bodies cannot be
dtype-polymorphic (compute in float32, CastLike back); Scan over T == 0 kills the process
(an If guard passes the state through); -1 in a Reshape target fails next to a zero dim.
"""

from __future__ import annotations

from collections.abc import Iterator

import onnx
from onnx import TensorProto, helper

from edgegate.exporters.onnx.schemas import DOMAIN


def _i64(name: str, vals: list[int]) -> onnx.NodeProto:
    return helper.make_node(
        "Constant", [], [name], value=helper.make_tensor(name, TensorProto.INT64, [len(vals)], vals)
    )


def _vi(name: str, elem=TensorProto.FLOAT) -> onnx.ValueInfoProto:
    # rank/shape left open; elem type must be concrete (subgraph inputs are not polymorphic)
    return helper.make_tensor_value_info(name, elem, None)


def _scale_nodes(q_in: str, q_out: str) -> list[onnx.NodeProto]:
    """q_out = q_in * @scale  (attribute reference to the calling node's `scale`)."""
    c = helper.make_node("Constant", [], ["scale_f"])
    a = onnx.AttributeProto()
    a.name = "value_float"
    a.ref_attr_name = "scale"
    a.type = onnx.AttributeProto.FLOAT
    c.attribute.append(a)
    return [
        c,
        helper.make_node("CastLike", ["scale_f", q_in], ["scale_c"]),
        helper.make_node("Mul", [q_in, "scale_c"], [q_out]),
    ]


def _scan_body(elem) -> onnx.GraphProto:
    nodes = [
        helper.make_node("Exp", ["g_t"], ["a_t"]),
        helper.make_node("Mul", ["a_t", "h_in"], ["ah"]),
        helper.make_node("Add", ["ah", "x_t"], ["h_out"]),
        helper.make_node("Identity", ["h_out"], ["y_t"]),
    ]
    return helper.make_graph(
        nodes,
        "gls_step",
        [_vi("h_in", elem), _vi("x_t", elem), _vi("g_t", elem)],
        [_vi("h_out", elem), _vi("y_t", elem)],
    )


def _gla_body(elem) -> onnx.GraphProto:
    nodes = [
        _i64("ax2", [2]),
        _i64("axm1", [-1]),
        helper.make_node("Exp", ["g_t"], ["a_t"]),  # [B,H,K|1]
        helper.make_node("Unsqueeze", ["a_t", "axm1"], ["a4"]),  # [B,H,K|1,1]
        helper.make_node("Mul", ["S_in", "a4"], ["Sd"]),
        helper.make_node("Unsqueeze", ["k_t", "axm1"], ["kc"]),  # [B,H,K,1]
        helper.make_node("Unsqueeze", ["v_t", "ax2"], ["vr"]),  # [B,H,1,V]
        helper.make_node("MatMul", ["kc", "vr"], ["kv"]),  # [B,H,K,V]
        helper.make_node("Add", ["Sd", "kv"], ["S_out"]),
        helper.make_node("Unsqueeze", ["q_t", "ax2"], ["qr"]),  # [B,H,1,K]
        helper.make_node("MatMul", ["qr", "S_out"], ["o4"]),  # [B,H,1,V]
        helper.make_node("Squeeze", ["o4", "ax2"], ["o_t"]),
    ]
    return helper.make_graph(
        nodes,
        "gla_step",
        [_vi("S_in", elem), _vi("q_t", elem), _vi("k_t", elem), _vi("v_t", elem), _vi("g_t", elem)],
        [_vi("S_out", elem), _vi("o_t", elem)],
    )


def _delta_body(elem) -> onnx.GraphProto:
    nodes = [
        _i64("ax2", [2]),
        _i64("ax3", [3]),
        _i64("ax23", [2, 3]),
        helper.make_node("Exp", ["g_t"], ["a_t"]),  # [B,H]
        helper.make_node("Unsqueeze", ["a_t", "ax23"], ["a4"]),  # [B,H,1,1]
        helper.make_node("Mul", ["S_in", "a4"], ["Sd"]),
        helper.make_node("Unsqueeze", ["k_t", "ax2"], ["kr"]),  # [B,H,1,K]
        helper.make_node("MatMul", ["kr", "Sd"], ["kS"]),  # [B,H,1,V]
        helper.make_node("Unsqueeze", ["v_t", "ax2"], ["vr"]),  # [B,H,1,V]
        helper.make_node("Sub", ["vr", "kS"], ["err"]),
        helper.make_node("Unsqueeze", ["b_t", "ax23"], ["b4"]),  # [B,H,1,1]
        helper.make_node("Mul", ["b4", "err"], ["u"]),
        helper.make_node("Unsqueeze", ["k_t", "ax3"], ["kc"]),  # [B,H,K,1]
        helper.make_node("MatMul", ["kc", "u"], ["ku"]),  # [B,H,K,V]
        helper.make_node("Add", ["Sd", "ku"], ["S_out"]),
        helper.make_node("Unsqueeze", ["q_t", "ax2"], ["qr"]),
        helper.make_node("MatMul", ["qr", "S_out"], ["o4"]),
        helper.make_node("Squeeze", ["o4", "ax2"], ["o_t"]),
    ]
    return helper.make_graph(
        nodes,
        "delta_step",
        [
            _vi("S_in", elem),
            _vi("q_t", elem),
            _vi("k_t", elem),
            _vi("v_t", elem),
            _vi("g_t", elem),
            _vi("b_t", elem),
        ],
        [_vi("S_out", elem), _vi("o_t", elem)],
    )


def _scan(
    n_scan: int, body, ins: list[str], outs: list[str], empty_like: str
) -> list[onnx.NodeProto]:
    """Scan over axis 1, guarded by If(T == 0): ORT 1.32's Scan dies with SIGFPE on a
    zero-length sequence. For T == 0 the state passes through and the output is `empty_like`
    (an input with the output's shape [B,0,H,V])."""
    F = TensorProto.FLOAT
    scan = helper.make_node(
        "Scan",
        ins,
        [o + "_sc" for o in outs],
        body=body,
        num_scan_inputs=n_scan,
        scan_input_axes=[1] * n_scan,
        scan_output_axes=[1],
    )
    then_g = helper.make_graph(
        [
            helper.make_node("Identity", [ins[0]], [outs[0] + "_t0"]),
            helper.make_node("Identity", [empty_like], [outs[1] + "_t0"]),
        ],
        "t_is_0",
        [],
        [_vi(outs[0] + "_t0", F), _vi(outs[1] + "_t0", F)],
    )
    else_g = helper.make_graph([scan], "t_pos", [], [_vi(o + "_sc", F) for o in outs])
    return [
        _i64("zero_len", [0]),
        helper.make_node("Shape", [ins[1]], ["t_len"], start=1, end=2),
        helper.make_node("Equal", ["t_len", "zero_len"], ["t_is0"]),
        helper.make_node("If", ["t_is0"], outs, then_branch=then_g, else_branch=else_g),
    ]


def _cast_in(names: list[str]) -> tuple[list[onnx.NodeProto], list[str]]:
    """Cast every input to float32: the Scan body is typed float32 (subgraph inputs cannot be
    dtype-polymorphic: ORT rejects elem_type UNDEFINED), so fp16/bf16 models run the
    fallback in fp32 and CastLike back, which also matches edgegate's fp32 compute policy."""
    nodes = [helper.make_node("Cast", [n], [n + "_f"], to=TensorProto.FLOAT) for n in names]
    return nodes, [n + "_f" for n in names]


def _cast_out(pairs: list[tuple[str, str]], like: str) -> list[onnx.NodeProto]:
    return [helper.make_node("CastLike", [src, like], [dst]) for src, dst in pairs]


def make_functions(opset_imports) -> list[onnx.FunctionProto]:
    F = TensorProto.FLOAT
    plugin = ["plugin_namespace", "plugin_version"]
    fns = []
    # GatedLinearScan(x, g, h0) -> (y, state)
    casts, (x, g, h0) = _cast_in(["x", "g", "h0"])
    nodes = casts + _scan(2, _scan_body(F), [h0, x, g], ["state_f", "y_f"], x)
    nodes += _cast_out([("y_f", "y"), ("state_f", "state")], "x")
    fns.append(
        helper.make_function(
            DOMAIN,
            "GatedLinearScan",
            ["x", "g", "h0"],
            ["y", "state"],
            nodes,
            opset_imports,
            attributes=plugin,
        )
    )
    # GatedLinearAttention(q, k, v, g, h0) -> (o, state); g [B,T,H,K] or [B,T,H]
    casts, (q, k, v, g, h0) = _cast_in(["q", "k", "v", "g", "h0"])
    nodes = (
        casts
        + _scale_nodes(q, "qs")
        + [
            # g [B,T,H,K] or [B,T,H] -> [B,T,H,K|1] via Slice(Concat(Shape(g), [1]), 0, 4): no -1 in
            # the Reshape target, which fails when T == 0
            _i64("one1", [1]),
            _i64("s0", [0]),
            _i64("s4", [4]),
            helper.make_node("Shape", ["g"], ["gs"]),
            helper.make_node("Concat", ["gs", "one1"], ["gs1"], axis=0),
            helper.make_node("Slice", ["gs1", "s0", "s4"], ["gshape"]),
            helper.make_node("Reshape", [g, "gshape"], ["g4"]),
        ]
        + _scan(4, _gla_body(F), [h0, "qs", k, v, "g4"], ["state_f", "o_f"], v)
        + _cast_out([("o_f", "o"), ("state_f", "state")], "q")
    )
    fns.append(
        helper.make_function(
            DOMAIN,
            "GatedLinearAttention",
            ["q", "k", "v", "g", "h0"],
            ["o", "state"],
            nodes,
            opset_imports,
            attributes=["scale"] + plugin,
        )
    )
    # GatedDeltaRule(q, k, v, g, beta, h0) -> (o, state)
    casts, (q, k, v, g, beta, h0) = _cast_in(["q", "k", "v", "g", "beta", "h0"])
    nodes = (
        casts
        + _scale_nodes(q, "qs")
        + _scan(5, _delta_body(F), [h0, "qs", k, v, g, beta], ["state_f", "o_f"], v)
        + _cast_out([("o_f", "o"), ("state_f", "state")], "q")
    )
    fns.append(
        helper.make_function(
            DOMAIN,
            "GatedDeltaRule",
            ["q", "k", "v", "g", "beta", "h0"],
            ["o", "state"],
            nodes,
            opset_imports,
            attributes=["scale"] + plugin,
        )
    )
    return fns


def attach_functions(model: onnx.ModelProto) -> onnx.ModelProto:
    """Append the fallback FunctionProtos for the edgegate ops used by `model` (in place)."""
    used = {n.op_type for n in iter_nodes(model.graph) if n.domain == DOMAIN}
    # function opset imports == model's (default domain version must match)
    imports = [
        helper.make_opsetid(o.domain, o.version) for o in model.opset_import if o.domain == ""
    ]
    have = {(f.domain, f.name) for f in model.functions}
    for f in make_functions(imports):
        if f.name in used and (f.domain, f.name) not in have:
            model.functions.append(f)
    return model


def iter_nodes(g: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    for n in g.node:
        yield n
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from iter_nodes(a.g)
            for sg in a.graphs:
                yield from iter_nodes(sg)
