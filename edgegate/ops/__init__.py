"""Gated operators. Layout [B,T,H,D]; gates in log space; each scan returns (out, final_state).

(Placeholder dispatch to the naive references; the chunked forms and custom ops replace it.)
"""

from edgegate.ops.clipped_softmax.naive import naive_clipped_softmax as clipped_softmax
from edgegate.ops.delta_rule.naive import naive_gated_delta_rule as gated_delta_rule
from edgegate.ops.gla.naive import naive_gated_linear_attention as gated_linear_attention
from edgegate.ops.linear_scan.naive import naive_gated_linear_scan as gated_linear_scan

__all__ = [
    "clipped_softmax",
    "gated_delta_rule",
    "gated_linear_attention",
    "gated_linear_scan",
]
