"""Write a TensorRT build kit: plugin sources, build.sh, golden data and the comparison script.

The kit builds and checks itself on the device with one command, ``bash build.sh``:
find TensorRT (headers, trtexec, major version) -> build the plugin library with CMake -> build
each engine with trtexec (flags for 10.x or 11.x) -> run it on the golden inputs -> time it ->
``compare.py`` judges the outputs against PyTorch's and prints PASS or FAIL. The comparison
needs Python 3 and numpy only, so a Jetson needs nothing more than JetPack.
"""

from __future__ import annotations

import importlib.resources
import json
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgegate.atomic import atomic_write
from edgegate.exporters.onnx.schemas import PLUGIN_ATTRS
from edgegate.exporters.tensorrt.onnx_model import PLUGIN_FIELDS, PLUGIN_OPS
from edgegate.exporters.tensorrt.trtexec import (
    SUPPORTED_MAJORS,
    ShapeRange,
    build_command,
    golden_command,
    timing_command,
)

PLUGIN_DIR = "plugin"
GOLDEN_DIR = "golden"
PLUGIN_LIBRARY = f"{PLUGIN_DIR}/build/libedgegate_trt_plugins.so"
PLUGIN_SOURCES = ("CMakeLists.txt", "cuda_arch.sh", "include/edgegate/scan_step.h",
                  "src/scan_kernels.h", "src/scan_kernels.cu", "src/plugins.cpp")  # fmt: skip
TOLERANCE_KEYS = ("precision", "max_abs_rel", "min_cosine", "min_top1_agreement",
                  "min_gate_agreement", "agreement_suffices", "gate_threshold")  # fmt: skip


@dataclass(frozen=True)
class KitPart:
    """One graph of the kit: its ONNX file, the module and inputs that produce its golden data."""

    stem: str
    onnx_file: str
    module: nn.Module
    args: tuple[torch.Tensor, ...]
    input_names: list[str]
    output_names: list[str]
    ranges: list[ShapeRange]
    classifier_outputs: frozenset[str] = frozenset()
    gate_outputs: frozenset[str] = frozenset()
    # the golden cases, each one call's inputs (real data, batch above 1); none: ``args``
    samples: tuple[tuple[torch.Tensor, ...], ...] = ()

    @property
    def engine_file(self) -> str:
        return f"{self.stem}.engine"

    @property
    def cases(self) -> tuple[tuple[torch.Tensor, ...], ...]:
        return self.samples or (self.args,)

    def case_file(self, case: int, name: str) -> str:
        """A golden file of one case, relative to the kit: inputs .bin, outputs .npy,
        trtexec's exported outputs .trt.json."""
        return f"{GOLDEN_DIR}/{self.stem}.{case}.{name}"


def shape_ranges(
    names: list[str],
    args: tuple[torch.Tensor, ...],
    dynamic: list[tuple[int, ...]],
    max_batch: int,
    bounds: dict[tuple[int, int], tuple[int, int]] | None = None,
) -> list[ShapeRange]:
    """Engine profiles: each dynamic dim from its declared ``bounds`` (input index, dim) ->
    (low, high), optimised for the export's own size at the smallest batch (the deployed one:
    models outside the zoo are traced at batch 2); without bounds, batch 1..max_batch and
    token sequences 1..the export's length. Every other dim (channels) as exported."""
    ranges = []
    for index, (name, arg, dims) in enumerate(zip(names, args, dynamic, strict=True)):
        shape = tuple(int(d) for d in arg.shape)
        low, high = list(shape), list(shape)
        for d in dims:
            if bounds and (index, d) in bounds:
                low[d], high[d] = bounds[(index, d)]
            elif d == 0:
                low[0], high[0] = 1, max(max_batch, shape[0])
            elif not arg.is_floating_point():
                low[d] = 1  # a shorter sequence, down to one token
        opt = (low[0], *shape[1:]) if 0 in dims else shape
        ranges.append(ShapeRange(name, tuple(low), tuple(opt), tuple(high)))
    return ranges


def _bash_array(name: str, command: list[str]) -> str:
    words = ['"$TRTEXEC"', *(shlex.quote(word) for word in command[1:])]
    return f"  {name}=({' '.join(words)})"


def render_build_script(
    model: str, precision: str, parts: list[KitPart], plugins: bool = True
) -> str:
    """build.sh: both TensorRT majors' command lines, chosen by the version found on the device.
    Without ``plugins`` (no edgegate custom op in the graphs) there is no library to build."""
    library = PLUGIN_LIBRARY if plugins else None
    branches = []
    for major in SUPPORTED_MAJORS:
        lines = []
        for part in parts:
            key = part.stem.replace(".", "_")
            build = build_command(
                major, part.onnx_file, part.engine_file, library, part.ranges, precision
            )
            lines.append(_bash_array(f"BUILD_{key}", build))
            for case, args in enumerate(part.cases):
                golden_inputs = [
                    (name, part.case_file(case, f"{name}.bin"), tuple(arg.shape))
                    for name, arg in zip(part.input_names, args, strict=True)
                ]
                lines.append(_bash_array(f"GOLDEN_{key}_{case}", golden_command(
                    major, part.engine_file, library, golden_inputs,
                    part.case_file(case, "trt.json"))))  # fmt: skip
            shapes = [(name, tuple(arg.shape)) for name, arg in zip(part.input_names, part.args,
                                                                    strict=True)]  # fmt: skip
            lines.append(_bash_array(f"TIMING_{key}", timing_command(
                major, part.engine_file, library, shapes,
                f"{GOLDEN_DIR}/{part.stem}.times.json")))  # fmt: skip
        branches.append((major, "\n".join(lines)))
    (major_10, lines_10), (major_11, lines_11) = branches
    steps = "\n".join(_steps(part) for part in parts)
    plugin_step = PLUGIN_STEP if plugins else NO_PLUGIN_STEP
    return BUILD_SCRIPT.replace("{plugin_step}", plugin_step).format(
        model=model, precision=precision, major_10=major_10, lines_10=lines_10,
        major_11=major_11, lines_11=lines_11, steps=steps, library=PLUGIN_LIBRARY,
    )  # fmt: skip


def _steps(part: KitPart) -> str:
    """build.sh's run lines of one part: build, a golden run per case, timing."""
    key = part.stem.replace(".", "_")
    lines = [f'run "${{BUILD_{key}[@]}}" || fail "engine build of {part.onnx_file}"']
    lines += [
        f'run "${{GOLDEN_{key}_{case}[@]}}" || fail "golden run {case} of {part.engine_file}"'
        for case in range(len(part.cases))
    ]
    lines.append(f'run "${{TIMING_{key}[@]}}" || fail "timing of {part.engine_file}"')
    return "\n".join(lines)


BUILD_SCRIPT = """#!/usr/bin/env bash
# edgegate TensorRT kit: {model} ({precision}). Run on the device: bash build.sh
# Builds the plugin library and the engine(s), runs them on the golden inputs, compares the
# outputs with PyTorch's (compare.py, Python 3 + numpy), times them, and ends with PASS or FAIL.
# Environment: TENSORRT_INCLUDE_DIR (folder of NvInferVersion.h), TENSORRT_ROOT, TRTEXEC,
# CUDA_ARCHS (e.g. 87 for Orin; default: the GPU found here, see plugin/cuda_arch.sh),
# CUDACXX (nvcc outside PATH), EDGEGATE_DRY_RUN=1 (print only),
# TRT_MAJOR (override the version read from the headers).
set -uo pipefail
cd "$(dirname "$0")"
DRY_RUN=${{EDGEGATE_DRY_RUN:-0}}
run() {{ echo "+ $*"; if [ "$DRY_RUN" != 1 ]; then "$@"; fi; }}
fail() {{ echo "FAIL: $*"; exit 1; }}

# 1. TensorRT: headers, trtexec and the major version
find_headers() {{
  local arch; arch=$(uname -m)
  for d in "${{TENSORRT_INCLUDE_DIR:-}}" "${{TENSORRT_ROOT:-/nonexistent}}/include" \\
           "/usr/include/$arch-linux-gnu" /usr/include /usr/local/tensorrt/include \\
           /opt/tensorrt/include; do
    if [ -n "$d" ] && [ -f "$d/NvInferVersion.h" ]; then echo "$d"; return 0; fi
  done
  return 1
}}
TRT_INCLUDE=$(find_headers) || fail "TensorRT headers not found: set TENSORRT_INCLUDE_DIR"
TRTEXEC=${{TRTEXEC:-$(command -v trtexec || true)}}
for candidate in "${{TENSORRT_ROOT:-/nonexistent}}/bin/trtexec" /usr/src/tensorrt/bin/trtexec; do
  if [ -z "$TRTEXEC" ] && [ -x "$candidate" ]; then TRTEXEC=$candidate; fi
done
if [ -z "$TRTEXEC" ]; then
  if [ "$DRY_RUN" = 1 ]; then TRTEXEC=trtexec; else fail "trtexec not found: set TRTEXEC"; fi
fi
read_major() {{
  grep -E '^#define (NV_TENSORRT_MAJOR|TRT_MAJOR_ENTERPRISE) [0-9]+' "$1/NvInferVersion.h" \\
    | head -1 | awk '{{print $3}}'
}}
TRT_MAJOR=${{TRT_MAJOR:-$(read_major "$TRT_INCLUDE")}}
case "$TRT_MAJOR" in
  {major_10}|{major_11}) ;;
  *) fail "TensorRT '$TRT_MAJOR' found in $TRT_INCLUDE: this kit supports 10.x and 11.x" ;;
esac
echo "TensorRT $TRT_MAJOR.x: headers in $TRT_INCLUDE, $TRTEXEC"

{plugin_step}
# 3-5. each engine: build, golden run, timing (command lines for the version found)
if [ "$TRT_MAJOR" -ge {major_11} ]; then
{lines_11}
else
{lines_10}
fi
{steps}

# 6. the verdict
if [ "$DRY_RUN" = 1 ]; then echo "DRY RUN: nothing was run"; exit 0; fi
python3 compare.py . || fail "the engine does not match PyTorch (see results.json)"
""".replace("{plugin_dir}", PLUGIN_DIR)


PLUGIN_STEP = """# 2. the plugin library (TensorRT headers only: symbols resolve at load time)
. {plugin_dir}/cuda_arch.sh || fail "{plugin_dir}/cuda_arch.sh is missing: copy the whole kit"
if [ -z "${{CUDACXX:-}}" ] && ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  export CUDACXX=/usr/local/cuda/bin/nvcc  # JetPack installs CUDA outside PATH
fi
if CUDA_ARCHS=$(cuda_arch); then
  echo "CUDA architectures: $CUDA_ARCHS"
elif [ "$DRY_RUN" = 1 ]; then
  CUDA_ARCHS="<CUDA_ARCHS>"
else
  fail "no CUDA architecture for the plugin (see above): set CUDA_ARCHS, e.g. 87 for Orin"
fi
run cmake -S {plugin_dir} -B {plugin_dir}/build -DCMAKE_BUILD_TYPE=Release \\
  -DTENSORRT_INCLUDE_DIR="$TRT_INCLUDE" -DCMAKE_CUDA_ARCHITECTURES="$CUDA_ARCHS" \\
  || fail "CMake could not configure the plugin"
run cmake --build {plugin_dir}/build -j || fail "the plugin library did not build"
""".replace("{plugin_dir}", PLUGIN_DIR)
NO_PLUGIN_STEP = "# 2. no plugin library: the graphs hold no edgegate custom op"


def _copy_plugin_sources(directory: Path) -> list[Path]:
    root = importlib.resources.files("edgegate.csrc") / "tensorrt"
    written = []
    for relative in PLUGIN_SOURCES:
        target = directory / PLUGIN_DIR / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        with importlib.resources.as_file(root.joinpath(*relative.split("/"))) as source:
            shutil.copyfile(source, target)
        written.append(target)
    return written


def _write_array(path: Path, array: np.ndarray, raw: bool) -> Path:
    """A golden array: raw little-endian bytes (trtexec's --loadInputs) or .npy."""
    with atomic_write(path) as fh:
        if raw:
            fh.write(array.astype(array.dtype.newbyteorder("<")).tobytes())
        else:
            np.save(fh, array, allow_pickle=False)
    return path


@torch.no_grad()
def _write_golden(
    directory: Path, parts: list[KitPart], precision: str, tolerance: dict[str, Any]
) -> list[Path]:
    """golden/: each part's cases (inputs as trtexec loads them, PyTorch's outputs) and
    golden.json, which compare.py reads. Nothing in them depends on the time or the run:
    the same model and cases write the same bytes."""
    (directory / GOLDEN_DIR).mkdir(parents=True, exist_ok=True)
    written, records = [], []
    for part in parts:
        cases = []
        for case, args in enumerate(part.cases):
            inputs = []
            for name, arg in zip(part.input_names, args, strict=True):
                array = np.ascontiguousarray(arg.detach().numpy())
                file = part.case_file(case, f"{name}.bin")
                written.append(_write_array(directory / file, array, raw=True))
                inputs.append({"name": name, "file": Path(file).name, "shape": list(array.shape),
                               "dtype": array.dtype.name})  # fmt: skip
            out = part.module.eval()(*args)
            outs = out if isinstance(out, tuple | list) else (out,)
            outputs = []
            for name, value in zip(part.output_names, outs, strict=False):
                file = part.case_file(case, f"{name}.npy")
                array = value.detach().float().numpy()
                written.append(_write_array(directory / file, array, raw=False))
                outputs.append({"name": name, "file": Path(file).name,
                                "classifier": name in part.classifier_outputs,
                                "gate": name in part.gate_outputs})  # fmt: skip
            engine_outputs = Path(part.case_file(case, "trt.json")).name
            cases.append({"inputs": inputs, "outputs": outputs, "engine_outputs": engine_outputs})
        records.append({"stem": part.stem, "engine": part.engine_file, "cases": cases})
    golden = {"precision": precision, "tolerance": tolerance, "parts": records}
    path = directory / GOLDEN_DIR / "golden.json"
    with atomic_write(path, "w") as fh:
        fh.write(json.dumps(golden, indent=2, sort_keys=True) + "\n")
    return [*written, path]


def plugin_records() -> dict[str, dict[str, Any]]:
    """What the library registers: each creator's name, namespace, version and fields."""
    return {
        op: {
            "namespace": PLUGIN_ATTRS["plugin_namespace"],
            "version": PLUGIN_ATTRS["plugin_version"],
            "fields": {name: "float32" for name in PLUGIN_FIELDS[op]},
        }
        for op in PLUGIN_OPS
    }


def write_kit(
    directory: Path,
    model: str,
    precision: str,
    parts: list[KitPart],
    tolerance: dict[str, Any],
    plugins: bool = True,
) -> dict[str, Any]:
    """Everything of the kit but its ONNX files (written by the exporter) and manifest; the
    plugin sources only with ``plugins`` (a graph with edgegate's custom ops). ``tolerance``
    (``TOLERANCE_KEYS``: validate's rules, as the target sets them for TensorRT) is what
    compare.py judges the engine's golden outputs by.

    Returns the written files (relative to ``directory``) and what the manifest records.
    """
    directory = Path(directory)
    written = _copy_plugin_sources(directory) if plugins else []
    missing = [key for key in TOLERANCE_KEYS if key not in tolerance]
    if missing:
        raise ValueError(f"the kit's tolerance lacks {', '.join(missing)}")
    written += _write_golden(directory, parts, precision, tolerance)
    compare = directory / "compare.py"
    with importlib.resources.as_file(
        importlib.resources.files("edgegate.exporters.tensorrt") / "kit_files" / "compare.py"
    ) as source:
        shutil.copyfile(source, compare)
    script = directory / "build.sh"
    with atomic_write(script, "w") as fh:
        fh.write(render_build_script(model, precision, parts, plugins))
    script.chmod(0o755)
    written += [compare, script]
    return {
        "files": sorted(str(p.relative_to(directory)) for p in written),
        "record": {
            "tensorrt_versions": [f"{major}.x" for major in SUPPORTED_MAJORS],
            "plugin_library": PLUGIN_LIBRARY if plugins else None,
            "plugins": plugin_records() if plugins else {},
            "shapes": {p.stem: {r.name: r.to_dict() for r in p.ranges} for p in parts},
            "golden_tolerance": tolerance,
            "golden_cases": {
                p.stem: [[list(a.shape) for a in args] for args in p.cases] for p in parts
            },  # fmt: skip
        },
    }
