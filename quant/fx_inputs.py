"""Questions about an fx graph's data flow that both INT8 engines (brevitas, PT2E) ask."""

from __future__ import annotations

from torch import fx


def depends_on_input(node: fx.Node) -> bool:
    """Whether a user input reaches ``node`` (parameters and buffers are get_attr nodes)."""
    stack, seen = [node], {node}
    while stack:
        current = stack.pop()
        if current.op == "placeholder":
            return True
        for arg in current.all_input_nodes:
            if arg not in seen:
                seen.add(arg)
                stack.append(arg)
    return False
