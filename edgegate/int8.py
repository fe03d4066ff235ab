"""The INT8 stage: calibrate (and optionally QAT), export QDQ ONNX, score, and record it all.

`edgegate quantize` and `edgegate deploy --int8` both run `quantize`; `edgegate validate`
uses `load_fake_quant` to rebuild the brevitas reference an INT8 export is judged against.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgegate import data as datasets
from edgegate import models as zoo
from edgegate.atomic import atomic_write, staged_directory
from edgegate.errors import BadInput
from edgegate.manifest import Manifest, sha256_file, write_manifest
from edgegate.quant.calibrate import add_corrected_bias_slots, calibrate
from edgegate.quant.graph import QuantConfig, quantize_model
from edgegate.quant.profiles import get_profile
from edgegate.quant.qat import QATConfig, train_qat
from edgegate.quant.qdq import activation_quants, to_qdq
from edgegate.quant.quantizers import check_method
from edgegate.validate.parity import Tolerance, top1_agreement

INT8_ONNX = "model.int8.onnx"
INT8_STATE = "model.int8.pt"  # pipeline.INT8_STATE names the same file
STATE_FORMAT = "edgegate-int8/1"
CALIB_BATCH = {"image": 16, "gc": 16, "lm": 4}
Progress = Callable[[str, int, int], None]


def calibration_inputs(
    loaded: zoo.LoadedModel,
    task: str,
    source: str | None,
    samples: int,
    *,
    input_size: int | None,
    seq_len: int | None,
) -> tuple[torch.Tensor, str]:
    """Model inputs for calibration (whole sequences for LMs) and where they came from."""
    from edgegate import pipeline

    if samples < 1:
        raise BadInput(f"--calib-samples must be at least 1, got {samples}")
    if task == "lm":
        tokens = datasets.resolve_text_data(source, "calib")
        length = pipeline._seq_len(loaded, seq_len)
        windows = datasets.text_windows(tokens, length)
        inputs, name = windows[:samples, :-1], source or "stdlib"
    else:
        channels, size = pipeline._image_geometry(loaded, input_size)
        images = datasets.resolve_image_data(source, "calib", size=size, channels=channels)
        inputs, name = images.images[:samples], images.name
    if len(inputs) == 0:
        raise BadInput(f"calibration data '{source or name}' holds no samples")
    if inputs.is_floating_point() and not torch.isfinite(inputs).all():
        bad = int((~torch.isfinite(inputs)).flatten(1).any(1).nonzero()[0])
        raise BadInput(f"calibration data '{name}' has NaN or inf in sample {bad}")
    return inputs, name


def _check_fits(module: nn.Module, inputs: torch.Tensor, spec: str) -> None:
    """Run one sample through the float model so a shape mismatch is a bad input, not a crash."""
    try:
        with torch.no_grad():
            module(inputs[:1])
    except (RuntimeError, ValueError, IndexError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInput(
            f"calibration inputs of shape {list(inputs.shape[1:])} do not fit {spec}: {reason}"
        ) from exc


def tensor_hash(tensor: torch.Tensor) -> str:
    """SHA-256 of the exact calibration tensor (shape, dtype and bytes)."""
    h = hashlib.sha256(f"{tuple(tensor.shape)}:{tensor.dtype}".encode())
    h.update(tensor.contiguous().numpy().tobytes())
    return h.hexdigest()


def load_fake_quant(path: Path, float_module: nn.Module) -> nn.Module:
    """Rebuild the calibrated brevitas model saved by `quantize` (weights_only load)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BadInput(f"cannot read quantized state '{path}': {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise BadInput(f"'{path}' is not an edgegate INT8 state ({STATE_FORMAT})")
    q = state["quant"]
    config = QuantConfig(
        get_profile(q["profile"], w8a8=q.get("w8a8", False)),
        q["method"],
        q["quantize_scan_inputs"],
    )
    module = quantize_model(float_module, config)
    add_corrected_bias_slots(module, state["state"])
    module.load_state_dict(state["state"])
    return module.eval()


def _predictions(module: nn.Module, inputs: torch.Tensor, batch: int = 64) -> list[np.ndarray]:
    outs: list[list[np.ndarray]] = []
    with torch.no_grad():
        for chunk in inputs.split(batch):
            out = module(chunk)
            outs.append([o.numpy() for o in (out if isinstance(out, tuple) else (out,))])
    return [np.concatenate(parts) for parts in zip(*outs, strict=True)]


def _flip_rate(reference: list[np.ndarray], candidate: list[np.ndarray], threshold: float) -> float:
    """Percent of samples whose GC gate decision (output 1) differs."""
    return round(
        100.0 * float(((reference[1] >= threshold) != (candidate[1] >= threshold)).mean()), 4
    )


def _agreement(reference: list[np.ndarray], candidate: list[np.ndarray]) -> dict[str, float]:
    """Top-1 agreement of the first output, overall and on decisions that are not near-ties
    (reference top two further apart than the INT8 tolerance), as `validate` judges it."""
    ref, cand = reference[0], candidate[0]
    near_tie = Tolerance.for_precision("int8").allowed_abs(ref)
    return {
        "top1_agreement": round(top1_agreement(ref, cand), 4),
        "decisive_top1_agreement": round(top1_agreement(ref, cand, near_tie), 4),
        "near_tie_margin": round(near_tie, 6),
    }


def _batched(
    predict: Callable[[np.ndarray], list[np.ndarray]], inputs: np.ndarray
) -> list[np.ndarray]:
    outs = [predict(inputs[i : i + 64]) for i in range(0, len(inputs), 64)]
    return [np.concatenate(parts) for parts in zip(*outs, strict=True)]


def _loss_vs_float(metrics: dict[str, Any], name: str, kind: str) -> float:
    """What quantizing cost: top-1 points lost, or perplexity gained for language models."""
    if kind == "lm":
        return round(metrics[name]["perplexity"] - metrics["float"]["perplexity"], 4)
    return round(metrics["float"]["top1"] - metrics[name]["top1"], 4)


def _qat_recovery(metrics: dict[str, Any], kind: str) -> dict[str, float | None]:
    """How much of the PTQ loss QAT won back; no fraction when PTQ lost nothing to win back."""
    ptq, qat = _loss_vs_float(metrics, "ptq", kind), _loss_vs_float(metrics, "qat", kind)
    fraction = round((ptq - qat) / ptq, 4) if ptq > 0 else None
    return {"ptq_loss": ptq, "qat_loss": qat, "recovered_fraction": fraction}


def quantize(
    model: str,
    output_dir: Path,
    *,
    profile: str = "onnxruntime",
    method: str = "minmax",
    checkpoint: Path | None = None,
    calib_data: str | None = None,
    calib_samples: int = 256,
    data: str | None = None,
    qat_epochs: int = 0,
    input_size: int | None = None,
    seq_len: int | None = None,
    quantize_scan_inputs: bool = False,
    w8a8: bool = False,
    report: bool = False,
    trust_code: bool = False,
    task: str | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """PTQ (+ QAT) ``model`` under a target profile; write state, QDQ ONNX, manifest, report."""
    from edgegate import pipeline
    from edgegate.exporters.onnx import custom_ops_used, export_onnx
    from edgegate.runtime import OnnxRuntimeRunner
    from edgegate.validate import report as reports

    config = QuantConfig(
        get_profile(profile, w8a8=w8a8), check_method(method), quantize_scan_inputs
    )
    if qat_epochs < 0:
        raise BadInput(f"--qat-epochs must be >= 0, got {qat_epochs}")
    loaded = zoo.load_model(model, checkpoint, trust_code=trust_code)
    kind = pipeline._task(loaded, task)
    float_module = loaded.module.eval()
    calib, calib_name = calibration_inputs(
        loaded, kind, calib_data, calib_samples, input_size=input_size, seq_len=seq_len
    )
    _check_fits(float_module, calib, loaded.spec)
    test = pipeline.load_task_data(
        loaded, kind, data, "test", input_size=input_size, seq_len=seq_len
    )
    test_inputs = test.inputs[:, :-1] if kind == "lm" else test.inputs

    qmodel = quantize_model(float_module, config)
    batches = [(b,) for b in calib.split(CALIB_BATCH[kind])]
    calibrate(qmodel, batches, progress=progress)
    metrics: dict[str, Any] = {
        "float": pipeline.score(float_module, test),
        "ptq": pipeline.score_predict(pipeline.torch_predict(qmodel), test, float_module),
    }
    if qat_epochs:
        train = pipeline.load_task_data(
            loaded, kind, data, "train", input_size=input_size, seq_len=seq_len
        )
        qat_config = QATConfig(
            epochs=qat_epochs, positive_class=getattr(float_module, "positive_class", None)
        )

        def on_step(step: int, total: int, loss: float) -> None:
            if progress is not None:
                progress("QAT", step, total)

        train_qat(qmodel, kind, train.inputs, train.labels, qat_config, on_step=on_step)
        metrics["qat"] = pipeline.score_predict(pipeline.torch_predict(qmodel), test, float_module)

    qdq = to_qdq(qmodel)
    example = test_inputs[:1]
    input_name = pipeline.INPUT_NAME[kind]
    outputs = pipeline.OUTPUT_NAMES[kind]
    calib_record = {"source": calib_name, "samples": int(len(calib)), "sha256": tensor_hash(calib)}
    quant_record = {
        "profile": config.profile.name,
        "method": config.method,
        "quantize_scan_inputs": config.quantize_scan_inputs,
        "w8a8": w8a8,
        "qat_epochs": qat_epochs,
        "calibration": calib_record,
    }
    with staged_directory(output_dir) as stage:
        onnx_path = export_onnx(
            qdq,
            (example,),
            stage / INT8_ONNX,
            input_names=[input_name],
            output_names=outputs,
            metadata={
                "model": loaded.spec,
                "task": kind,
                "precision": "int8",
                "profile": config.profile.name,
            },
        )
        with atomic_write(stage / INT8_STATE, "wb") as fh:
            torch.save(
                {
                    "format": STATE_FORMAT,
                    "spec": loaded.spec,
                    "quant": quant_record,
                    "state": qmodel.state_dict(),
                },
                fh,
            )
        fake = _predictions(qmodel, test_inputs)
        fuse = config.profile.family == "onnxruntime"
        with OnnxRuntimeRunner(onnx_path, threads=2, fuse_qdq=fuse) as runner:
            predict = pipeline._runner_predict(runner, input_name)
            ort = _batched(predict, test_inputs.numpy())
            metrics["int8_onnx"] = pipeline.score_predict(predict, test, float_module)
        if fuse:
            feed = {input_name: np.ascontiguousarray(test_inputs.numpy()[:256])}
            kernels = pipeline.kernel_agreement(onnx_path, feed, outputs[0], threads=2)
        reference = _predictions(float_module, test_inputs)
        quants = activation_quants(qdq)
        summary: dict[str, Any] = {
            "model": loaded.spec,
            "task": kind,
            "quant": quant_record,
            "accuracy": metrics,
            "onnx_vs_fake_quant": _agreement(fake, ort),
            "kernel_agreement": kernels if fuse else None,
            "activation_quantizers": len(quants),
            "activation_zero_points_all_zero": all(q.zero_point == 0 for q in quants.values()),
        }
        final = "qat" if "qat" in metrics else "ptq"
        summary["drop_points" if kind != "lm" else "perplexity_increase"] = _loss_vs_float(
            metrics, final, kind
        )
        if "qat" in metrics:
            summary["qat_recovery"] = _qat_recovery(metrics, kind)
        if kind == "gc":
            threshold = float(float_module.threshold)
            summary["gate_flip_rate"] = {
                "fake_quant_vs_float": _flip_rate(reference, fake, threshold),
                "onnx_vs_float": _flip_rate(reference, ort, threshold),
                "onnx_vs_fake_quant": _flip_rate(fake, ort, threshold),
            }
        files = {name: sha256_file(stage / name) for name in (INT8_ONNX, INT8_STATE)}
        if report:
            from edgegate.quant.report import quantizability_report, write_quant_report

            rows = quantizability_report(float_module, qmodel, batches)
            for path in write_quant_report(rows, stage, {"model": loaded.spec, **quant_record}):
                files[path.name] = sha256_file(path)
            summary["report_layers"] = len(rows)
        reports.write_json(stage / "report.json", summary)
        files["report.json"] = sha256_file(stage / "report.json")
        manifest = Manifest(
            model=loaded.spec,
            target="onnxruntime",
            precision="int8",
            inputs=pipeline._onnx_input_specs(onnx_path),
            outputs=outputs,
            task=kind,
            files=files,
            custom_ops=sorted(custom_ops_used(onnx_path)),
            quant=quant_record,
            extra={
                "model_file": INT8_ONNX,
                "example_shapes": {input_name: list(example.shape)},
                "threshold": float(getattr(float_module, "threshold", 0.5)),
                "positive_class": int(getattr(float_module, "positive_class", -1)),
                "weights": pipeline._weights_source(loaded, checkpoint),
            },
        )
        write_manifest(stage, manifest)
    summary["output_dir"] = os.fspath(output_dir)
    summary["files"] = sorted([*files, "manifest.json"])
    summary["inputs"] = [asdict(s) for s in manifest.inputs]
    return summary
