"""Gated operators. Layout [B,T,H,D]; gates in log space; each scan returns (out, final_state).

One folder per op family: `naive.py` (recurrent reference) beside `chunk.py` (chunked
parallel form) and, for the scans, `parallel.py` (loop-free masked form, the decomposition
that Core ML and ExecuTorch get; see `decompose`). `api` holds the public functions,
`custom_ops` the torch.library ops that keep each call one node under torch.export.
"""

from edgegate.ops.api import (
    clipped_softmax,
    gated_delta_rule,
    gated_linear_attention,
    gated_linear_scan,
    observe_scans,
)
from edgegate.ops.clipped_softmax.chunk import chunk_clipped_softmax
from edgegate.ops.clipped_softmax.naive import naive_clipped_softmax
from edgegate.ops.delta_rule.chunk import chunk_gated_delta_rule
from edgegate.ops.delta_rule.naive import naive_gated_delta_rule
from edgegate.ops.delta_rule.parallel import parallel_gated_delta_rule
from edgegate.ops.gla.chunk import chunk_gated_linear_attention
from edgegate.ops.gla.naive import naive_gated_linear_attention
from edgegate.ops.gla.parallel import parallel_gated_linear_attention
from edgegate.ops.linear_scan.chunk import chunk_gated_linear_scan
from edgegate.ops.linear_scan.naive import naive_gated_linear_scan
from edgegate.ops.linear_scan.parallel import parallel_gated_linear_scan

__all__ = [
    "chunk_clipped_softmax",
    "chunk_gated_delta_rule",
    "chunk_gated_linear_attention",
    "chunk_gated_linear_scan",
    "clipped_softmax",
    "gated_delta_rule",
    "gated_linear_attention",
    "gated_linear_scan",
    "naive_clipped_softmax",
    "naive_gated_delta_rule",
    "naive_gated_linear_attention",
    "naive_gated_linear_scan",
    "observe_scans",
    "parallel_gated_delta_rule",
    "parallel_gated_linear_attention",
    "parallel_gated_linear_scan",
]
