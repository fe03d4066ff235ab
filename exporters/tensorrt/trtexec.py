"""trtexec command lines for TensorRT 10.x and 11.x.

10.x builds weakly typed networks by default, so precision is asked for with ``--fp16`` and,
for explicit Q/DQ graphs, ``--int8``. 11.x networks are always strongly typed: the ONNX's own
types decide, and trtexec refuses ``--fp16``, ``--int8``, ``--best`` and ``--calib`` as unknown
options. Both load the plugin library with ``--dynamicPlugins`` and share the run options
(``--loadInputs``, ``--exportOutput``, ``--percentile``, ``--exportTimes``).
"""

from __future__ import annotations

from dataclasses import dataclass

from edgegate.errors import BadInput

PRECISIONS = ("fp32", "fp16", "int8")
SUPPORTED_MAJORS = (10, 11)


@dataclass(frozen=True)
class ShapeRange:
    """The shapes one engine input accepts: TensorRT's optimisation profile."""

    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def to_dict(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


def _dims(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


def _shapes_flag(flag: str, pairs: list[tuple[str, tuple[int, ...]]]) -> str:
    return f"--{flag}=" + ",".join(f"{name}:{_dims(shape)}" for name, shape in pairs)


def _check(major: int, precision: str) -> None:
    if major not in SUPPORTED_MAJORS:
        raise BadInput(f"TensorRT {major}.x is not supported (supported: 10.x and 11.x)")
    if precision not in PRECISIONS:
        raise BadInput(f"unknown precision '{precision}': expected one of {', '.join(PRECISIONS)}")


def _plugin_flag(plugin_library: str | None) -> list[str]:
    return [f"--dynamicPlugins={plugin_library}"] if plugin_library else []


def precision_flags(major: int, precision: str) -> list[str]:
    """10.x: the builder flags that allow the precision; 11.x: none (strongly typed)."""
    _check(major, precision)
    if major >= 11 or precision == "fp32":
        return []
    return ["--fp16"] if precision == "fp16" else ["--int8"]


def build_command(
    major: int,
    onnx_file: str,
    engine_file: str,
    plugin_library: str | None,
    ranges: list[ShapeRange],
    precision: str,
    trtexec: str = "trtexec",
) -> list[str]:
    """Build an engine from ``onnx_file`` with the plugin library loaded (when there is one:
    a graph without edgegate's custom ops needs none)."""
    command = [
        trtexec,
        f"--onnx={onnx_file}",
        f"--saveEngine={engine_file}",
        *_plugin_flag(plugin_library),
    ]
    if ranges:
        command += [
            _shapes_flag("minShapes", [(r.name, r.min) for r in ranges]),
            _shapes_flag("optShapes", [(r.name, r.opt) for r in ranges]),
            _shapes_flag("maxShapes", [(r.name, r.max) for r in ranges]),
        ]
    return command + precision_flags(major, precision) + ["--skipInference"]


def golden_command(
    major: int,
    engine_file: str,
    plugin_library: str | None,
    inputs: list[tuple[str, str, tuple[int, ...]]],
    output_json: str,
    trtexec: str = "trtexec",
) -> list[str]:
    """Run the engine once on the golden inputs (name, raw file, shape); export the outputs."""
    _check(major, "fp32")
    return [
        trtexec,
        f"--loadEngine={engine_file}",
        *_plugin_flag(plugin_library),
        _shapes_flag("shapes", [(name, shape) for name, _, shape in inputs]),
        "--loadInputs=" + ",".join(f"{name}:{file}" for name, file, _ in inputs),
        f"--exportOutput={output_json}",
        "--warmUp=0",
        "--iterations=1",
        "--duration=0",
    ]


def timing_command(
    major: int,
    engine_file: str,
    plugin_library: str | None,
    shapes: list[tuple[str, tuple[int, ...]]],
    times_json: str,
    iterations: int = 200,
    trtexec: str = "trtexec",
) -> list[str]:
    """Time warm runs at the given shapes; per-run times go to ``times_json``."""
    _check(major, "fp32")
    return [
        trtexec,
        f"--loadEngine={engine_file}",
        *_plugin_flag(plugin_library),
        _shapes_flag("shapes", shapes),
        "--warmUp=500",
        f"--iterations={iterations}",
        "--duration=0",
        "--percentile=50,90,99",
        f"--exportTimes={times_json}",
    ]
