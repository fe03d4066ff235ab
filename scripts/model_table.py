"""Print the README's model-zoo table from the shipped checkpoints' own records.

Usage: .venv/bin/python scripts/model_table.py
"""

from __future__ import annotations

import torch

from edgegate.models import (
    WEIGHTS_DIR,
    build_model,
    count_macs,
    count_params,
    display_command,
    example_inputs,
)
from edgegate.pipeline.zoo import model_table


def main() -> None:
    rows = {row["name"]: row for row in model_table()}
    shipped = {}
    for path in sorted(WEIGHTS_DIR.glob("*.pt")):
        checkpoint = torch.load(path, weights_only=True)
        shipped[checkpoint["spec"]] = checkpoint
    print("| model | task | params | MACs | default input | test result | trained with |")
    print("|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        specs = [s for s in shipped if s.split(":")[0] == name] or [name]
        for spec in specs:
            checkpoint = shipped.get(spec)
            if checkpoint is None:
                result, command = "not shipped", "-"
            else:
                m = checkpoint["metrics"]
                if "perplexity" in m:
                    bits = m["bits_per_byte"]
                    result = f"perplexity {m['perplexity']:.4f} ({bits:.3f} bits/byte)"
                elif "stop_rate_negatives" in m:
                    result = (
                        f"top1 {m['top1']:.2f} %, stops {m['stop_rate_negatives']:.1f} % of "
                        f"negatives, passes {m['pass_rate_positives']:.1f} % of positives, "
                        f"keeps {100 * m['compression_ratio']:.1f} % of channels"
                    )
                else:
                    result = f"top1 {m['top1']:.2f} %"
                command = f"`{display_command(checkpoint['extra']['command'])}`"
            shape = "x".join(map(str, row["default_input"]))
            module = build_model(spec).eval()
            params, macs = count_params(module), count_macs(module, example_inputs(spec))
            print(
                f"| `{spec}` | {row['task']} | {params:,} | {macs / 1e6:.2f} M "
                f"| {shape} | {result} | {command} |"
            )


if __name__ == "__main__":
    main()
