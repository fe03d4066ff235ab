"""Run a parsed ML Program op by op over a name -> array environment."""

from __future__ import annotations

import os
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgegate.errors import BadInput
from edgegate.runtime.base import TensorSpec
from edgegate.runtime.coreml_emulator import (  # noqa: F401  (fill the op table)
    ops_constexpr,
    ops_elementwise,
    ops_nn,
    ops_tensor,
)
from edgegate.runtime.coreml_emulator._program import (
    BlobReader,
    Op,
    TensorInfo,
    load_spec,
    op_types,
    parse_function,
)
from edgegate.runtime.coreml_emulator._registry import (
    OPS,
    Args,
    MILEmulationError,
    UnsupportedMILOp,
)

# Ops whose inputs are all fixed in the program: evaluated once, when the model is loaded.
_LOAD_TIME = ("const", "constexpr_")


def supported_ops() -> set[str]:
    """Every MIL op type the emulator implements."""
    return set(OPS)


def unsupported_ops(model: Any, *, function: str = "main") -> list[str]:
    """Op types in the program (nested blocks included) that the emulator lacks, sorted."""
    spec, _ = load_spec(model)
    if function not in spec.mlProgram.functions:
        raise BadInput(f"no function '{function}' in the program")
    return sorted({t for t in op_types(spec, function) if t not in OPS})


class _Step:
    __slots__ = ("op", "fn", "args", "outputs", "release")

    def __init__(self, op: Op) -> None:
        self.op = op
        self.fn = OPS[op.type]
        self.args = [
            (param, [(b.name, b.value) for b in bindings]) for param, bindings in op.inputs.items()
        ]
        self.outputs = op.outputs
        self.release: list[str] = []


def _store(op: Op, result: Any, info: TensorInfo | None) -> Any:
    """`result` in the declared dtype, checked against the declared rank and static dims."""
    if info is None or info.dtype == "string":
        return result
    arr = np.asarray(result)
    if arr.dtype != info.np_dtype:
        if np.issubdtype(arr.dtype, np.floating) and np.issubdtype(info.np_dtype, np.integer):
            arr = np.trunc(arr)
        arr = arr.astype(info.np_dtype)
    if info.dims is not None:
        ok = arr.ndim == len(info.dims) and all(
            d is None or d == s for d, s in zip(info.dims, arr.shape, strict=True)
        )
        if not ok:
            declared = tuple("?" if d is None else d for d in info.dims)
            raise MILEmulationError(
                f"op '{op.name}' ({op.type}) produced shape {arr.shape}, but the program "
                f"declares {declared}"
            )
    return arr


def _input_limits(description: Any) -> dict[str, Any]:
    """Per model input: ('range', [(lo, hi|None)]), ('enum', [shapes]) or ('fixed', shape)."""
    limits: dict[str, Any] = {}
    for feature in description.input:
        if feature.type.WhichOneof("Type") != "multiArrayType":
            continue
        arr = feature.type.multiArrayType
        flex = arr.WhichOneof("ShapeFlexibility")
        if flex == "shapeRange":
            limits[feature.name] = (
                "range",
                [
                    (r.lowerBound, None if r.upperBound < 0 else r.upperBound)
                    for r in arr.shapeRange.sizeRanges
                ],
            )
        elif flex == "enumeratedShapes":
            limits[feature.name] = ("enum", [tuple(s.shape) for s in arr.enumeratedShapes.shapes])
        elif len(arr.shape):
            limits[feature.name] = ("fixed", tuple(arr.shape))
    return limits


def _description(spec: Any, function: str) -> Any:
    for fn in spec.description.functions:
        if fn.name == function:
            return fn
    return spec.description


class Emulator:
    """A Core ML ML Program evaluated with numpy; parse once, `run` many times.

    Every var keeps the dtype the program declares (fp16 vars hold np.float16, rounded after
    each op that produces one), so an fp16 program shows its rounding. Each op computes in fp32.
    Outputs come back in their declared dtype, keyed by the model's output names.
    """

    def __init__(self, model: Any, *, function: str = "main") -> None:
        spec, root = load_spec(model)
        self.function = function
        blobs = BlobReader(root)
        fn = parse_function(spec, function, blobs)
        for op in fn.ops:
            if op.has_blocks or op.type not in OPS:
                others = sorted(
                    {t for o in fn.ops for t in [o.type, *o.nested_types] if t not in OPS}
                    - {op.type}
                )
                detail = "the program also needs " + ", ".join(others) if others else ""
                raise UnsupportedMILOp(op.type, op.name, detail)
        self._inputs = fn.inputs
        description = _description(spec, function)
        self._limits = _input_limits(description)
        names = [o.name for o in description.output]
        self._outputs = list(
            zip(names if len(names) == len(fn.outputs) else fn.outputs, fn.outputs, strict=True)
        )
        declared = dict(fn.inputs)
        declared.update((name, info) for op in fn.ops for name, info in op.outputs)
        self._output_info = [declared.get(var) for _, var in self._outputs]
        self._consts: dict[str, Any] = {}
        self._steps: list[_Step] = []
        for op in fn.ops:
            step = _Step(op)
            if op.type.startswith(_LOAD_TIME) and all(
                name is None or name in self._consts for _, bs in step.args for name, _ in bs
            ):
                self._execute(step, self._consts)
            else:
                self._steps.append(step)
        self._plan_release()

    def _plan_release(self) -> None:
        """Free each intermediate after its last reader (constants and outputs are kept)."""
        keep = set(self._consts) | {var for _, var in self._outputs}
        last: dict[str, _Step] = {}
        for step in self._steps:
            for _, bindings in step.args:
                for name, _ in bindings:
                    if name is not None and name not in keep:
                        last[name] = step
        for name, step in last.items():
            step.release.append(name)

    # ---- what it takes and gives -------------------------------------------------------------

    def input_specs(self) -> list[TensorSpec]:
        """Inputs with None for each flexible dim, dtypes as numpy names."""
        specs = []
        for name, info in self._inputs:
            kind, limit = self._limits.get(name, ("fixed", info.dims))
            if kind == "fixed" and limit is not None:
                shape = tuple(int(d) for d in limit)
            elif kind == "range":
                shape = tuple(lo if lo == hi else None for lo, hi in limit)
            else:
                shape = tuple(d for d in (info.dims or ()))
            specs.append(TensorSpec(name, shape, np.dtype(info.np_dtype).name))
        return specs

    def output_names(self) -> list[str]:
        return [name for name, _ in self._outputs]

    def output_specs(self) -> list[TensorSpec]:
        """Outputs as the program declares them (None = dim known only at run time)."""
        specs = []
        for (name, _), info in zip(self._outputs, self._output_info, strict=True):
            dtype = np.dtype(info.np_dtype).name if info is not None else "object"
            dims = tuple(info.dims) if info is not None and info.dims is not None else ()
            specs.append(TensorSpec(name, dims, dtype))
        return specs

    # ---- running -----------------------------------------------------------------------------

    def _check_feeds(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        names = [name for name, _ in self._inputs]
        unknown = sorted(set(feeds) - set(names))
        missing = [n for n in names if n not in feeds]
        if unknown or missing:
            raise BadInput(
                f"Core ML emulator feed: missing {missing or 'none'}, unknown "
                f"{unknown or 'none'} (inputs: {', '.join(names)})"
            )
        checked = {}
        for name, info in self._inputs:
            arr = np.asarray(feeds[name])
            target = np.dtype(info.np_dtype)
            if np.issubdtype(arr.dtype, np.floating) and not np.issubdtype(target, np.floating):
                raise BadInput(f"input '{name}' must be {target.name}, got {arr.dtype.name}")
            self._check_shape(name, arr.shape, info)
            checked[name] = arr.astype(target, copy=False)
        return checked

    def _check_shape(self, name: str, shape: tuple[int, ...], info: TensorInfo) -> None:
        kind, limit = self._limits.get(name, ("fixed", info.dims))
        if limit is None:
            return
        if kind == "enum":
            if tuple(shape) not in limit:
                raise BadInput(f"input '{name}' has shape {shape}; the model accepts {limit}")
            return
        if len(shape) != len(limit):
            raise BadInput(f"input '{name}' has rank {len(shape)}; the model expects {len(limit)}")
        for axis, (size, bound) in enumerate(zip(shape, limit, strict=True)):
            lo, hi = (bound, bound) if kind == "fixed" else bound
            if bound is None:  # unknown static dim in the MIL type
                continue
            if size < lo or (hi is not None and size > hi):
                span = str(lo) if lo == hi else f"{lo}..{'inf' if hi is None else hi}"
                raise BadInput(f"input '{name}' dim {axis} is {size}; the model accepts {span}")

    def _execute(self, step: _Step, env: dict[str, Any]) -> None:
        op = step.op
        values = {
            param: [env[name] if name is not None else value for name, value in bindings]
            for param, bindings in step.args
        }
        args = Args(op.type, op.name, values, [info for _, info in step.outputs])
        try:
            result = step.fn(args)
        except (UnsupportedMILOp, MILEmulationError):
            raise
        except Exception as exc:
            raise MILEmulationError(f"op '{op.name}' ({op.type}) failed: {exc}") from exc
        results = result if isinstance(result, tuple) else (result,)
        if len(results) != len(step.outputs):
            raise MILEmulationError(
                f"op '{op.name}' ({op.type}) gave {len(results)} results "
                f"for {len(step.outputs)} outputs"
            )
        for (name, info), value in zip(step.outputs, results, strict=True):
            env[name] = _store(op, value, info)

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Evaluate the program on `feeds` (input name -> array); output name -> array."""
        env: dict[str, Any] = dict(self._consts)
        env.update(self._check_feeds(feeds))
        with np.errstate(all="ignore"):
            for step in self._steps:
                self._execute(step, env)
                for name in step.release:
                    env.pop(name, None)
        return {name: env[var] for name, var in self._outputs}


# ---- evaluate(): a cache of parsed programs ------------------------------------------------------

_BY_MODEL: weakref.WeakKeyDictionary[Any, dict[str, Emulator]] = weakref.WeakKeyDictionary()
_BY_PATH: OrderedDict[tuple[str, int, str], Emulator] = OrderedDict()
_PATH_CACHE_SIZE = 8


def _emulator(model: Any, function: str) -> Emulator:
    if isinstance(model, (str, os.PathLike)):
        path = Path(model).resolve()
        if not path.exists():
            raise BadInput(f"'{path}' does not exist")
        # the package's data files only: Manifest.json is rewritten by mere loading elsewhere
        files = [p for p in (path.rglob("*") if path.is_dir() else [path]) if p.is_file()]
        stamp = hash(
            tuple(
                (os.fspath(p), p.stat().st_mtime_ns, p.stat().st_size)
                for p in sorted(files)
                if p.name != "Manifest.json"
            )
        )
        key = (os.fspath(path), stamp, function)
        if key not in _BY_PATH:
            _BY_PATH[key] = Emulator(path, function=function)
            while len(_BY_PATH) > _PATH_CACHE_SIZE:
                _BY_PATH.popitem(last=False)
        _BY_PATH.move_to_end(key)
        return _BY_PATH[key]
    try:
        per_model = _BY_MODEL.setdefault(model, {})
    except TypeError:  # not weak-referenceable: no cache
        return Emulator(model, function=function)
    if function not in per_model:
        per_model[function] = Emulator(model, function=function)
    return per_model[function]


def evaluate(model: Any, feeds: Mapping[str, Any], *, function: str = "main") -> dict[str, Any]:
    """Emulated Core ML prediction: `model` is an MLModel or an .mlpackage path (the parsed
    program is cached per model object / per package path and modification time)."""
    return _emulator(model, function).run(feeds)
