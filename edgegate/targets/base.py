"""What a deployment target is: how it exports a graph, how its files run, what it needs.

A target module subclasses ``Target`` once and exposes the instance as ``TARGET``; the
registry (``edgegate.targets``) lists the modules. The pipeline asks a target, never names one.
"""

from __future__ import annotations

import importlib.util
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgegate.dims import DimRange
from edgegate.errors import BackendUnavailable
from edgegate.manifest import InputSpec, Manifest

if TYPE_CHECKING:  # the registry stays importable without torch, for the CLI's choices
    import numpy as np
    import torch
    from torch import nn

    from edgegate.runtime import Runner


@dataclass(frozen=True)
class ExportPart:
    """One graph to write: a module, its example inputs, names, and which dims may vary.

    ``dynamic_dims`` lists, per input, the dims that vary at run time (batch, image side,
    sequence length); every other dim is fixed at its example value (image channels).
    """

    stem: str  # "model", "stage1", "stage2": the file name without the target's suffix
    module: nn.Module
    args: tuple[torch.Tensor, ...]
    input_names: list[str]
    output_names: list[str]
    dynamic_dims: list[tuple[int, ...]]
    metadata: dict[str, str] = field(default_factory=dict)
    classifier_outputs: frozenset[str] = frozenset()  # outputs whose argmax is the decision
    precision: str = "fp32"  # "fp16": the file computes in half (module and float inputs are
    # already half, unless the target converts precision itself)
    # the declared sizes of the dynamic dims (``edgegate.pipeline.ranges``), which exporters that
    # bound their dims (shape profiles, memory plans, flexible shapes) take as their bounds;
    # empty: the exporter's own defaults
    ranges: tuple[DimRange, ...] = ()
    gate_outputs: frozenset[str] = frozenset()  # outputs whose >= 0.5 is a decision
    # golden cases for targets that check their file on the device (``golden_samples``): real
    # inputs from the task's data, each case one call's args (batch above 1; LMs at two lengths)
    samples: tuple[tuple[torch.Tensor, ...], ...] = ()

    def bounds(self, index: int, axis: int) -> tuple[int, int] | None:
        """(low, high) of dim ``axis`` of input ``index`` when the part declares it."""
        found = next((r for r in self.ranges if r.index == index and r.axis == axis), None)
        return None if found is None else (found.low, found.high)


@dataclass(frozen=True)
class ExportedFile:
    """What a target wrote for one part, as the manifest records it."""

    path: Path
    inputs: list[InputSpec]
    custom_ops: list[str] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)  # what ``package`` adds to the manifest
    # why the exporter kept a dim static that the part asked to vary ("tokens.batch": reason)
    static_reasons: dict[str, str] = field(default_factory=dict)


class Target(ABC):
    """A deployment target. Subclasses set the class attributes and implement the methods."""

    name: str = ""
    summary: str = ""  # one line for --help and `edgegate targets`
    suffix: str = ""  # file suffix of what ``export`` writes, e.g. ".onnx"
    requires: tuple[str, ...] = ()  # importable modules needed to export and run here
    install_hint: str = ""  # the command that installs them
    default_profile: str | None = None  # INT8 profile family used when none is given
    precisions: tuple[str, ...] = ("fp32",)  # float precisions ``export`` writes
    profile_families: tuple[str, ...] = ()  # INT8 profile families whose exports it runs
    portable: bool = False  # also runs INT8 exports of families no registered target takes
    converts_precision: bool = False  # fp16: gets the fp32 module and converts it itself
    # INT8 from the target's own toolchain (``quantize_native``) instead of edgegate's brevitas
    # Q/DQ: its name, and the file holding the quantized model torch runs as the reference
    int8_toolchain: str | None = None
    int8_reference: str = ""
    # weight scales the target's INT8 file can hold: one per output channel, one per tensor
    # (``quantize --weight-granularity``; edgegate's brevitas INT8 only)
    weight_granularities: tuple[str, ...] = ("channel", "tensor")
    # On-device validation (`edgegate bundle`): the runtime a bundle's run.py drives on the
    # device ("onnxruntime", "executorch", "coreml", "tensorrt"), and whether it reads its
    # inputs as raw little-endian files (trtexec's --loadInputs) besides inputs.npz
    device_runtime: str = ""
    raw_device_inputs: bool = False
    # Declared ranges (``edgegate.pipeline.ranges``): the largest batch an export promises, and
    # whether its files are planned for the export's own sizes, so no dim grows past them
    max_batch: int = 8
    bounded_by_export: bool = False
    # whether ``package`` stores golden cases (``ExportPart.samples``) for an on-device check
    golden_samples: bool = False
    sequences_bounded_by_export: bool = False  # token sequences only (loop-free scan forms)
    # W4 (`quantize --scheme w4`, weight-only INT4): the form the target's file gives weight-only
    # layers (``edgegate.exporters.onnx.weight_only.FORMS``), None where W4 has not landed yet
    # (``w4_missing`` says where it will); whether its INT4 codes are symmetric (no zero points)
    w4_form: str | None = None
    w4_symmetric: bool = True
    w4_missing: str = "is not available"

    def file_name(self, stem: str) -> str:
        return f"{stem}{self.suffix}"

    def missing(self) -> list[str]:
        """The required modules this Python cannot import."""
        return [name for name in self.requires if importlib.util.find_spec(name) is None]

    def check_available(self) -> None:
        """BackendUnavailable (exit 3) naming the install command when a library is missing."""
        missing = self.missing()
        if missing:
            raise BackendUnavailable(
                f"target '{self.name}' needs {', '.join(missing)}, which is not installed: "
                f"{self.install_hint}"
            )

    def check_w4(self, group_size: int) -> None:
        """BadInput, before any work, where this target writes no W4 file (or none with
        groups of ``group_size``)."""
        if self.w4_form is None:
            from edgegate.errors import BadInput

            raise BadInput(f"--scheme w4: W4 for target '{self.name}' {self.w4_missing}")

    def w4_settings(self, profile: str) -> dict[str, str]:
        """What a W4 export of this target records and its exporter reads (``ExportPart``
        metadata), for the deployment variant ``profile`` names. ``w4_precision`` is what the
        file computes in, so the tolerance it is judged at against the W4 fake-quant model:
        fp32 (dequantized weights, float math) unless the kernel quantizes activations."""
        return {"w4_precision": "fp32"}

    def w4_module(self, module: nn.Module) -> nn.Module:
        """What ``export`` gets for a W4-prepared model: ONNX exporters take each weight-only
        layer as one custom op (``edgegate.quant.weight_only_export``); a target whose own
        toolchain converts W4 layers (ExecuTorch, Core ML) takes the prepared model as it is."""
        from edgegate.quant.weight_only_export import exportable_w4

        return exportable_w4(module)

    def check_part(self, part: ExportPart) -> None:  # noqa: B027 - optional hook
        """BadInput when the target cannot take ``part``: called for every part before any
        export starts, so an unsupported model fails in a second, not after minutes."""

    @abstractmethod
    def export(self, part: ExportPart, directory: Path) -> ExportedFile:
        """Write ``part`` into ``directory`` (a staging folder) and describe the file."""

    @abstractmethod
    def runner(self, path: str | os.PathLike[str], threads: int | None = None) -> Runner:
        """A Runner for a file this target wrote (float or INT8)."""

    def package(
        self,
        directory: Path,
        model: str,
        precision: str,
        parts: list[ExportPart],
        files: list[ExportedFile],
    ) -> dict[str, Any]:
        """Write what the target adds around its model files (a build kit, say) into
        ``directory``; returns {"files": [relative paths], "record": {manifest entries}}."""
        return {"files": [], "record": {}}

    def check_build(self) -> None:
        """BackendUnavailable unless this machine can build the target's engine in process."""
        raise BackendUnavailable(f"target '{self.name}' has no engine to build")

    def build(self, directory: Path, manifest: Manifest) -> list[str]:
        """Build the engine(s) of an export in ``directory``; returns the files written."""
        raise BackendUnavailable(f"target '{self.name}' has no engine to build")

    def device_files(self, manifest: Manifest, model_file: str) -> list[str]:
        """The export's files (relative to its folder) that a device needs to run it."""
        return [model_file]

    def device_record(self, manifest: Manifest, model_file: str) -> dict[str, Any]:
        """What a bundle's run.py needs besides the model file (an engine's path, say)."""
        return {}

    def host_warnings(
        self, manifest: Manifest | None, model_file: str, directory: Path | None = None
    ) -> list[str]:
        """One line per way this host may not compute what the artifact was made for
        (``directory``: the folder holding ``model_file``, where it is known)."""
        return []

    def quantize_native(
        self,
        module: nn.Module,
        args: tuple[torch.Tensor, ...],
        dynamic_dims: list[tuple[int, ...]],
        batches: list[tuple[torch.Tensor, ...]],
        *,
        method: str,
        quantize_scan_inputs: bool,
    ) -> nn.Module | None:
        """The INT8 model of a target whose toolchain quantizes (calibrated on ``batches``),
        which torch runs as the reference and ``export`` lowers; None: edgegate's brevitas
        Q/DQ (every target without ``int8_toolchain``)."""
        return None

    def check_native_options(self, *, method: str) -> None:  # noqa: B027 - optional hook
        """BadInput, before any work, for a quantize option the target's toolchain lacks."""

    def save_int8_reference(
        self,
        module: nn.Module,
        args: tuple[torch.Tensor, ...],
        dynamic_dims: list[tuple[int, ...]],
        path: Path,
    ) -> None:
        """Write what ``quantize_native`` returned, for ``validate`` to run again later."""
        raise NotImplementedError(f"target '{self.name}' has no INT8 toolchain of its own")

    def load_int8_reference(self, path: Path) -> nn.Module:
        """The module ``save_int8_reference`` wrote."""
        raise NotImplementedError(f"target '{self.name}' has no INT8 toolchain of its own")

    def inspectable_onnx(self, model_path: Path) -> Path | None:
        """The ONNX graph whose intermediate values ``validate --localize`` may expose for a
        model file of this target; None where the target's file is not ONNX."""
        return None

    def kernel_check(
        self, path: Path, feed: dict[str, np.ndarray], output: str, threads: int | None
    ) -> dict[str, Any] | None:
        """For INT8 files: how the runtime's own integer kernels agree with the graph as
        written (dequantize, then float). None where the target has no such distinction."""
        return None
