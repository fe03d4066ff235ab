"""The W4 configuration object (torchao style: one small frozen dataclass)."""

from __future__ import annotations

from dataclasses import dataclass

from edgegate.errors import BadInput
from edgegate.quant.groups import MIN_GROUP

KEEP_MODES = ("int8", "float")


@dataclass(frozen=True)
class W4Config:
    """How a model is prepared for W4 (one object, passed to ``prepare_w4``).

    ``keep``: how the layers that stay higher precision are stored: ``int8`` (weight-only,
    per output channel) or ``float``. ``alphas``: the AWQ exponents searched per layer group;
    0 is in the grid, so a group is never scaled worse than not at all.
    """

    group_size: int = 32
    symmetric: bool = True
    awq: bool = True
    keep: str = "int8"
    alphas: tuple[float, ...] = (0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)
    awq_rows: int = 4096  # calibration rows (tokens) per layer group the search uses

    def check(self) -> None:
        """BadInput for a configuration no target's kernel takes."""
        gs = self.group_size
        if gs < MIN_GROUP or gs & (gs - 1):
            raise BadInput(
                f"--group-size must be a power of two >= {MIN_GROUP} (ONNX Runtime's "
                f"MatMulNBits block size), got {gs}"
            )
        if self.keep not in KEEP_MODES:
            raise BadInput(f"keep must be one of {', '.join(KEEP_MODES)}, got {self.keep!r}")
