"""Lowering pass: edgegate nodes -> onnxruntime's native com.microsoft.LinearAttention.

The native kernel runs about 15-20x faster than the Scan fallback on CPU. It needs static
head counts and head dims (they are attributes), taken from shape inference.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from edgegate.errors import BadInput
from edgegate.exporters.onnx.functions import iter_nodes
from edgegate.exporters.onnx.schemas import DOMAIN
from edgegate.exporters.onnx.shapes import static_dims


def lower_to_ort_linear_attention(
    model: onnx.ModelProto,
    heads: dict[str, tuple[int, int]] | None = None,
    drop_functions: bool = True,
    _rank_agnostic: bool = False,
    example_shapes: list[list[int]] | None = None,
) -> onnx.ModelProto:
    """Rewrite edgegate.* nodes of the main graph into com.microsoft.LinearAttention.

    Needs static H and D (q_num_heads is an attribute): taken from shape inference, from the
    graph inputs' ``example_shapes`` (in graph-input order) where the graph left them symbolic,
    or from `heads[node_name or "*"] = (H, D)` (plus heads["V"]). Batch and time stay dynamic:
    the rewritten reshapes copy those dims and fix only H*D.
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    dims = static_dims(model, example_shapes)
    g = model.graph
    new_nodes: list[onnx.NodeProto] = []
    uid = [0]

    def fresh(base):
        uid[0] += 1
        return f"{base}__la{uid[0]}"

    def const_i64(vals):
        name = fresh("c")
        new_nodes.append(
            helper.make_node(
                "Constant",
                [],
                [name],
                value=helper.make_tensor(name, TensorProto.INT64, [len(vals)], vals),
            )
        )
        return name

    def node(op_type, ins, n_out=1, domain="", **attrs):
        outs = [fresh(op_type) for _ in range(n_out)]
        new_nodes.append(helper.make_node(op_type, ins, outs, domain=domain, **attrs))
        return outs if n_out > 1 else outs[0]

    def hd(n, tensor):
        d = dims.get(tensor)
        if d is not None and len(d) == 4 and d[2] is not None and d[3] is not None:
            return d[2], d[3]
        if heads and (n.name in heads or "*" in heads):
            return heads.get(n.name, heads.get("*"))
        raise BadInput(
            f"cannot lower {n.op_type}: heads and head dim of '{tensor}' are dynamic; "
            "export with static H and D (only batch and time dynamic)"
        )

    consts: dict[tuple, str] = {}

    def cached(vals):  # one Constant per distinct int64 vector
        if tuple(vals) not in consts:
            consts[tuple(vals)] = const_i64(vals)
        return consts[tuple(vals)]

    # Reshape targets use 0 (= copy dim) and a static H*D, never -1: a -1 next to a zero-size
    # dim (T == 0) cannot be inferred and Reshape fails.
    def pack(t, HD):  # [B,T,H,D] -> [B,T,H*D]
        return node("Reshape", [t, cached([0, 0, HD])])

    def pack_any(t):  # [B,T,H,K] -> [B,T,H*K]; [B,T,H] -> [B,T,H]; no static dims needed.
        # Last resort only: ORT's level-1 ReshapeFusion rewrites this Shape->ReduceProd->Concat
        # target into [0,0,-1], which then fails at T == 0.
        n_last = node("ReduceProd", [node("Shape", [t], start=2)], keepdims=1)
        return node("Reshape", [t, node("Concat", [cached([0, 0]), n_last], axis=0)])

    for n in g.node:
        if n.domain != DOMAIN:
            new_nodes.append(n)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if n.op_type in ("GatedLinearAttention", "GatedDeltaRule"):
            q, k, v, gg = n.input[:4]
            H, Kd = hd(n, q)
            beta = n.input[4] if n.op_type == "GatedDeltaRule" else ""
            h0 = n.input[-1] if len(n.input) > (5 if beta else 4) else ""
            vd = dims.get(v)
            Vd = vd[3] if vd and len(vd) == 4 and vd[3] else (heads or {}).get("V")
            g_rank = len(dims[gg]) if gg in dims and not _rank_agnostic else None
            ins = [pack(q, H * Kd), pack(k, H * Kd), pack(v, H * Vd) if Vd else pack_any(v)]
            # decay: [B,T,H,K] -> [B,T,H*K]; [B,T,H] stays as is (per-head decay)
            dec = pack(gg, H * Kd) if g_rank == 4 else gg if g_rank == 3 else pack_any(gg)
            ins += [h0, dec]
            if beta:
                ins.append(beta)  # [B,T,H] already
            rule = "gated_delta" if beta else "gated"
            o3, st = node(
                "LinearAttention",
                ins,
                2,
                domain="com.microsoft",
                update_rule=rule,
                q_num_heads=H,
                kv_num_heads=H,
                scale=float(attrs["scale"]),
            )
            new_nodes.append(helper.make_node("Shape", [v], [fresh("vshape")]))
            vshape = new_nodes[-1].output[0]
            new_nodes.append(helper.make_node("Reshape", [o3, vshape], [n.output[0]]))
            new_nodes.append(helper.make_node("Identity", [st], [n.output[1]]))
        elif n.op_type == "GatedLinearScan":
            x, gg, h0 = (list(n.input) + ["", ""])[:3]
            H, D = hd(n, x)
            xp = pack(x, H * D)  # [B,T,H*D] : H*D heads with K=V=1
            gp = pack(gg, H * D)
            one = node("CastLike", [node("Constant", [], value_float=1.0), x])
            ones = node("Expand", [one, node("Shape", [xp])])
            past = node("Reshape", [h0, cached([0, H * D, 1, 1])]) if h0 else ""
            y3, st = node(
                "LinearAttention",
                [ones, ones, xp, past, gp],
                2,
                domain="com.microsoft",
                update_rule="gated",
                q_num_heads=H * D,
                kv_num_heads=H * D,
                scale=1.0,
            )
            new_nodes.append(helper.make_node("Reshape", [y3, node("Shape", [x])], [n.output[0]]))
            new_nodes.append(helper.make_node("Reshape", [st, cached([0, H, D])], [n.output[1]]))
        else:
            raise BadInput(f"cannot lower unknown edgegate op {n.op_type}")
    del g.node[:]
    g.node.extend(new_nodes)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    if drop_functions:
        keep = [f for f in model.functions if f.domain != DOMAIN]
        del model.functions[:]
        model.functions.extend(keep)
        # edgegate opset import is harmless; drop it when no edgegate node is left
        if not any(n.domain == DOMAIN for n in iter_nodes(g)):
            keep_ops = [o for o in model.opset_import if o.domain != DOMAIN]
            del model.opset_import[:]
            model.opset_import.extend(keep_ops)
    return model
