"""Target ``executorch``: XNNPACK-delegated ExecuTorch programs (.pte), run here by ExecuTorch.

Each graph is exported with its batch (up to 8) and its image side or sequence length (up to
the export's own size) dynamic, its gated scans rewritten into loop-free core aten (ExecuTorch
has no kernels for edgegate's custom ops), then lowered: XNNPACK takes what it can, the
portable kernels the rest. A dim that cannot stay dynamic is fixed, and the manifest says
which and why (``executorch.parts.<stem>.static_dims``).

INT8 comes from ExecuTorch's own toolchain: PT2E with XNNPACK's quantizer and edgegate's gate
rules (``edgegate.quant.pt2e``); the converted PT2E model is the reference the .pte is judged
against, saved beside it as ``model.int8.pt2``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgegate.errors import BadInput
from edgegate.exporters.executorch import MAX_BATCH, export_pte, unsupported_ops
from edgegate.libs import EXECUTORCH_INSTALL
from edgegate.ops import observe_scans
from edgegate.ops._parallel import MAX_PARALLEL_T
from edgegate.runtime import ExecuTorchRunner, Runner
from edgegate.targets.base import ExportedFile, ExportPart, Target

EXECUTORCH_VERSION = "1.5.1"  # the release the export and the runner are written against


class ExecuTorchTarget(Target):
    name = "executorch"
    # W4: XNNPACK's 8da4w linears (int8 dynamic per-token activations, symmetric int4 group
    # weights carrying the W4 codes; edgegate.quant.xnnpack_w4)
    w4_form = "8da4w"
    w4_symmetric = True
    summary = "ExecuTorch .pte: XNNPACK delegate, scans as loop-free aten, PT2E INT8"
    suffix = ".pte"
    requires = ("executorch", "torchao")
    install_hint = EXECUTORCH_INSTALL
    default_profile = "executorch"
    profile_families = ("executorch",)
    int8_toolchain = "pt2e"
    int8_reference = "model.int8.pt2"
    weight_granularities = ("channel",)  # XNNPACK's quantizer: per-channel weights
    device_runtime = "executorch"
    bounded_by_export = True  # memory is planned for each dim's upper bound

    def check_part(self, part: ExportPart) -> None:
        """One forward pass: every op must have a kernel or a decomposition here, and every
        scan must run within the loop-free forms' range (``MAX_PARALLEL_T`` steps)."""
        calls: list[tuple[str, list[tuple[int, ...]]]] = []
        with observe_scans(lambda op, shapes: calls.append((op, shapes))):
            missing = unsupported_ops(part.module, part.args)
        if missing:
            raise BadInput(
                f"{part.stem}: {', '.join(missing)} has no ExecuTorch kernel and no "
                "decomposition (the executorch target takes aten ops and edgegate's scans)"
            )
        for op, shapes in calls:
            steps = shapes[0][1]
            if steps > MAX_PARALLEL_T:
                raise BadInput(
                    f"{part.stem}: {op} runs over {steps} steps, beyond the {MAX_PARALLEL_T} "
                    "its loop-free form covers (ExecuTorch has no scan kernel): use "
                    f"--seq-len {MAX_PARALLEL_T} or less"
                )

    def check_w4(self, group_size: int) -> None:
        from edgegate.quant.xnnpack_w4 import GROUP

        if group_size % GROUP:
            raise BadInput(
                f"--group-size {group_size}: XNNPACK's 4-bit group weights take groups that "
                f"are a multiple of {GROUP} (executorch)"
            )

    def w4_settings(self, profile: str) -> dict[str, str]:
        return {"w4_precision": "int8"}  # 8da4w quantizes activations per token

    def w4_module(self, module: nn.Module) -> nn.Module:
        return module  # export_pte_8da4w converts the W4 layers itself

    def export(self, part: ExportPart, directory: Path) -> ExportedFile:
        w4 = part.metadata.get("scheme") == "w4"
        if w4:  # the W4 layers become 8da4w linears, read back from the .pte once written
            from edgegate.exporters.executorch.w4 import export_pte_8da4w as lower
        else:
            lower = export_pte
        lowered = lower(
            part.module,
            part.args,
            directory / self.file_name(part.stem),
            input_names=part.input_names,
            output_names=part.output_names,
            dynamic_dims=part.dynamic_dims,
            metadata=part.metadata,
            ranges=part.ranges,
        )
        written = lowered.export if w4 else lowered
        record = {
            "dynamic_ranges": written.ranges,
            "static_dims": written.static_dims,
            "xnnpack_delegates": written.delegated_nodes,
            "portable_ops": written.portable_ops,
        }
        if w4:
            record["w4_linears"] = len(lowered.linears)  # codes as prepared, read back
        return ExportedFile(written.path, written.inputs, [], record, written.static_reasons)

    def package(
        self,
        directory: Path,
        model: str,
        precision: str,
        parts: list[ExportPart],
        files: list[ExportedFile],
    ) -> dict[str, Any]:
        return {
            "files": [],
            "record": {
                "executorch": {
                    "version": EXECUTORCH_VERSION,
                    "backend": "XnnpackBackend",
                    "max_batch": MAX_BATCH,
                    "parts": {p.stem: f.record for p, f in zip(parts, files, strict=True)},
                }
            },
        }

    def runner(self, path: str | os.PathLike[str], threads: int | None = None) -> Runner:
        return ExecuTorchRunner(path, threads=threads)

    def check_native_options(self, *, method: str) -> None:
        from edgegate.quant.pt2e import check_method

        check_method(method)

    def quantize_native(
        self,
        module: nn.Module,
        args: tuple[torch.Tensor, ...],
        dynamic_dims: list[tuple[int, ...]],
        batches: list[tuple[torch.Tensor, ...]],
        *,
        method: str,
        quantize_scan_inputs: bool,
    ) -> nn.Module:
        from edgegate.quant.pt2e import quantize_xnnpack

        return quantize_xnnpack(
            module,
            args,
            dynamic_dims,
            batches,
            method=method,
            quantize_scan_inputs=quantize_scan_inputs,
        )

    def save_int8_reference(
        self,
        module: nn.Module,
        args: tuple[torch.Tensor, ...],
        dynamic_dims: list[tuple[int, ...]],
        path: Path,
    ) -> None:
        from edgegate.quant.pt2e import save_reference

        save_reference(module, args, dynamic_dims, path)

    def load_int8_reference(self, path: Path) -> nn.Module:
        from edgegate.quant.pt2e import load_reference

        return load_reference(path)


TARGET = ExecuTorchTarget()
