"""INT8 speed table: models x runtimes x (FP32, edgegate INT8, the runtime's own INT8 flow).

Usage: .venv/bin/python benchmarks/bench_int8.py
       [--models mobilenet-v3-se,mobilenet-v3-large-se,gc-mobilenet]
       [--size 224 --threads 2 --runs 100 --profile-runs 20] [--json-out int8.json]
       [--plot int8.png] [--checkpoint mobilenet-v3-large-se=ckpt.pt] [--no-executorch]
       [--no-roofline]

Every cell of the table is one model file run by one runtime, all measured in this one run:
- runtimes: ONNX Runtime under each instruction-set variant of edgegate's onnxruntime profile
  that this host computes exactly (an x86 host with VNNI takes both x86 variants; one without,
  only ``x86-avx2``'s 7-bit weights), and ExecuTorch with XNNPACK;
- variants: ``fp32``; ``edgegate_int8`` (ONNX Runtime: the QDQ export of ``edgegate quantize``;
  ExecuTorch: PT2E with edgegate's gate rules); ``native_int8``, the runtime's own flow
  (``quantize_static`` after ``quant_pre_process``, per-channel s8 weights, u8 activations,
  ``reduce_range`` for the 7-bit variant; XNNPACK's quantizer without the gate rules).

Each model is exported once with batch and image side dynamic: timed at ``--size`` (batch 1,
round-robin over the model's cells, so machine noise hits them alike), and scored top-1 on the
digits test split at the 32x32 it was trained at. Every INT8 form is calibrated on the same
digits calibration images. ``gc-mobilenet`` is timed whole (both stages, its gate output
computed but not used to stop early) and scored on its ``logits`` output. Prints the table, the
ratios the INT8 work is judged by (edgegate INT8 over the runtime's own INT8 flow; FP32 over
edgegate INT8; top-1 loss), and writes them as JSON and a PNG chart.

Two more measurements say where the time goes and how much faster it could be:
- ORT profile breakdown: each ONNX Runtime cell again in a profiled session, outside the timed
  rounds (profiling slows a run), ``--profile-runs`` runs: kernel time per run and node count
  per op type, and the share of kernel time outside conv/matmul (``ort_profile.COMPUTE_OPS``),
  with the conv time split by kind (depthwise, 1x1, spatial) read from ORT's optimized graph:
  ORT's u8 depthwise kernel is slower than its FP32 NCHWc one, and this shows by how much;
- roofline: this host's FP32 and INT8 MAC rates in ONNX Runtime's kernels (host_roofline.py)
  and each model's conv/matmul MACs at ``--size``; each row gets ``roofline_ms`` (MACs at the
  rate of its precision) and ``fraction_of_roofline`` (roofline_ms / p50). The rates are ORT's
  kernels': on ExecuTorch rows the fraction compares XNNPACK with them.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from edgegate.data.digits import digits
from edgegate.exporters.onnx.export import auto_dynamic_shapes, export_onnx
from edgegate.hostcpu import host_isa
from edgegate.models import load_model
from edgegate.models.measure import count_macs
from edgegate.pipeline.tasks import resolve_task
from edgegate.quant.calibrate import calibrate
from edgegate.quant.graph import QuantConfig, quantize_model
from edgegate.quant.profiles import get_profile
from edgegate.quant.qdq import to_qdq
from edgegate.runtime import Runner
from edgegate.validate.accuracy import classifier_metrics

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling modules, however loaded
import host_roofline  # noqa: E402
import ort_profile  # noqa: E402

CALIB_BATCH = 16


class ImageReader(CalibrationDataReader):
    """Feeds ORT's calibrator the same images, one batch-1 sample per call."""

    def __init__(self, name: str, images: np.ndarray) -> None:
        self._feeds = iter([{name: img[None]} for img in images])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def _session(path: Path, threads: int, profile_prefix: str | None = None) -> ort.InferenceSession:
    return ort_profile.benchmark_session(str(path), threads, profile_prefix)


def _calibration(size: int, calib_samples: int) -> torch.Tensor:
    """The digits calibration images every INT8 form here is calibrated on."""
    return digits("calib", size, 3).images[:calib_samples]


def _qdq_module(module, calib: torch.Tensor, profile: str):
    """edgegate's INT8 model under ``profile``, calibrated on ``calib``, ready for Q/DQ export
    (what `edgegate quantize` exports)."""
    qmodel = quantize_model(module, QuantConfig(get_profile(profile), "minmax"))
    calibrate(qmodel, [(b,) for b in torch.split(calib, CALIB_BATCH)])
    return to_qdq(qmodel)


def _edgegate_int8(module, calib: torch.Tensor, path: Path, profile: str = "onnxruntime") -> Path:
    """edgegate's INT8 QDQ export under ``profile``, static at the calibration image size."""
    return export_onnx(_qdq_module(module, calib, profile), (calib[:1],), path)


def _run(session: ort.InferenceSession, x: np.ndarray) -> list[np.ndarray]:
    return session.run(None, {session.get_inputs()[0].name: x})


def time_round_robin(
    calls: dict[str, Callable[[], object]], runs: int, warmup: int
) -> dict[str, list[float]]:
    """Milliseconds per call of each callable, round-robin: each round calls every one once,
    so drift and noise are shared."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for round_ in range(warmup + runs):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            if round_ >= warmup:
                times[name].append((time.perf_counter() - start) * 1e3)
    return times


TRAIN_SIZE = 32  # the zoo's CNNs are trained on 32x32 digits
IMAGE_DIMS = [(0, 2, 3)]  # batch and image side dynamic, as `edgegate export` asks
VARIANTS = ("fp32", "edgegate_int8", "native_int8")


def ort_variants() -> list[str]:
    """The onnxruntime profiles this host computes exactly: a VNNI host also runs x86-avx2's
    7-bit weights exactly; an AVX2 host would saturate x86-vnni's full-range ones."""
    isa = host_isa()
    variants = {"x86-vnni": ["x86-vnni", "x86-avx2"], "x86-avx2": ["x86-avx2"]}.get(isa, [isa])
    return [f"onnxruntime:{v}" for v in variants]


def _dynamic_onnx(module, example: torch.Tensor, path: Path, outputs: list[str]) -> Path:
    return export_onnx(
        module,
        (example,),
        path,
        input_names=["images"],
        output_names=outputs,
        dynamic_shapes=auto_dynamic_shapes((example,), module, IMAGE_DIMS),
    )


def _ort_int8(module, calib, example: torch.Tensor, path: Path, profile: str, outputs: list[str]):
    """edgegate's QDQ export under ``profile``, batch and image side dynamic."""
    return _dynamic_onnx(_qdq_module(module, calib, profile), example, path, outputs)


def _quantize_static(fp32: Path, calib: torch.Tensor, path: Path, profile: str) -> Path:
    preprocessed = path.with_name(f"{path.stem}_pre.onnx")
    quant_pre_process(str(fp32), str(preprocessed))
    quantize_static(
        str(preprocessed),
        str(path),
        ImageReader("images", calib.numpy()),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        reduce_range=get_profile(profile).weight_bits < 8,
    )
    return path


def model_macs(module: torch.nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates of one forward at the example's shape: the convolutions (a
    depthwise one does in/groups per output element) and matrix products, as
    ``edgegate models`` counts them (torch's FLOP counter, halved)."""
    return count_macs(module, (example,))


def build_cells(model, checkpoint, tmp: Path, size: int, calib_samples: int, executorch: bool):
    """{(runtime, variant): file} for one model; the timing input; the model's outputs (a
    gated-compression model adds ``gate_prob`` to ``logits``); its MACs at ``size``."""
    loaded = load_model(model, checkpoint)
    module = loaded.module.eval()
    outputs = list(resolve_task(loaded).output_names)
    calib = _calibration(TRAIN_SIZE, calib_samples)
    example = digits("test", size, 3).images[:1]
    tmp.mkdir(parents=True, exist_ok=True)
    cells = {("onnxruntime", "fp32"): _dynamic_onnx(module, example, tmp / "fp32.onnx", outputs)}
    for profile in ort_variants():
        tag = profile.split(":")[1]
        cells[(profile, "edgegate_int8")] = _ort_int8(
            module, calib, example, tmp / f"eg_{tag}.onnx", profile, outputs
        )
        cells[(profile, "native_int8")] = _quantize_static(
            cells[("onnxruntime", "fp32")], calib, tmp / f"qs_{tag}.onnx", profile
        )
    if executorch:
        from edgegate.exporters.executorch import export_pte
        from edgegate.quant.pt2e import quantize_xnnpack

        names = {"input_names": ["images"], "output_names": outputs, "dynamic_dims": IMAGE_DIMS}
        batches = [(b,) for b in torch.split(calib, CALIB_BATCH)]
        cells[("executorch", "fp32")] = export_pte(
            module, (example,), tmp / "fp32.pte", **names
        ).path
        for variant, rules in (("edgegate_int8", True), ("native_int8", False)):
            # captured at the timing size, so the image side may range from 32 up to it
            converted = quantize_xnnpack(module, (example,), IMAGE_DIMS, batches, gate_rules=rules)
            pte = export_pte(converted, (example,), tmp / f"{variant}.pte", **names)
            cells[("executorch", variant)] = pte.path
    return cells, example.numpy(), model_macs(module, example)


class _OrtCell(Runner):
    """An ONNX Runtime session as the benchmark sessions are made (no spinning pool threads,
    which would steal the next cell's time in a round-robin)."""

    name = "onnxruntime"

    def __init__(self, path: Path, threads: int) -> None:
        super().__init__()
        self.path, self.threads, self.session, self._outputs = path, threads, None, []

    def activate(self) -> None:
        self.session = _session(self.path, self.threads)
        self._outputs = [o.name for o in self.session.get_outputs()]

    def deactivate(self) -> None:
        self.session = None

    def input_specs(self) -> list:
        return []

    def output_names(self) -> list[str]:
        return list(self._outputs)

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self._outputs, self.session.run(None, feed), strict=True))


def _runner(path: Path, threads: int) -> Runner:
    if path.suffix == ".pte":
        from edgegate.runtime import ExecuTorchRunner

        return ExecuTorchRunner(path, threads=threads)
    return _OrtCell(path, threads)


def _top1(runner: Runner, images: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 from the ``logits`` output (a gated-compression model's gate output aside)."""
    predict = lambda batch: [runner.run({"images": batch})["logits"]]  # noqa: E731
    return round(classifier_metrics(predict, images, labels).top1, 2)


def profile_cells(cells: dict, x: np.ndarray, threads: int, runs: int, tmp: Path) -> dict:
    """{(runtime, variant): OpBreakdown} of the ONNX Runtime cells, each in a profiled session
    made as the timed ones are, run round-robin; the traces are written under ``tmp`` and
    deleted once read."""
    feed = {"images": x}
    sessions = {
        key: (_session(path, threads, profile_prefix=str(tmp / f"profile_{path.stem}")), feed)
        for key, path in cells.items()
        if path.suffix == ".onnx"
    }
    return ort_profile.profile(sessions, runs)


def measure_model(model, checkpoint, tmp, a) -> tuple[list[dict], list[dict]]:
    """Every cell of one model: p50/p90 at ``--size`` (round-robin), top-1 at 32x32, and the
    model's MACs at ``--size``; then, unless ``--profile-runs 0``, the ORT profile of each ONNX
    Runtime cell."""
    cells, x, macs = build_cells(model, checkpoint, tmp, a.size, a.calib_samples, a.executorch)
    test = digits("test", TRAIN_SIZE, 3)
    images, labels = test.images.numpy(), test.labels.numpy()
    runners = {key: _runner(path, a.threads) for key, path in cells.items()}
    for runner in runners.values():
        runner.__enter__()
    try:
        top1 = {key: _top1(runner, images, labels) for key, runner in runners.items()}
        calls = {key: functools.partial(r.run, {"images": x}) for key, r in runners.items()}
        times = time_round_robin(calls, a.runs, a.warmup)
    finally:
        for runner in runners.values():
            runner.__exit__(None, None, None)
    rows = []
    for (runtime, variant), t in times.items():
        rows.append({
            "model": model, "runtime": runtime, "variant": variant,
            "p50_ms": round(statistics.median(t), 3),
            "p90_ms": round(float(np.percentile(t, 90)), 3),
            "top1": top1[(runtime, variant)], "macs": macs,
        })  # fmt: skip
    profiles = []
    if a.profile_runs > 0:
        for (runtime, variant), kernels in profile_cells(
            cells, x, a.threads, a.profile_runs, tmp
        ).items():
            profiles.append({"model": model, "runtime": runtime, "variant": variant,
                             **kernels.as_json()})  # fmt: skip
    return rows, profiles


def add_roofline(rows: list[dict], roofline: dict) -> None:
    """Each row's roofline_ms (its model's MACs at the host's rate for its precision) and the
    fraction of that limit it reaches (roofline_ms / p50_ms)."""
    for r in rows:
        rate = roofline["fp32_mac_s" if r["variant"] == "fp32" else "int8_mac_s"]
        r["roofline_ms"] = round(r["macs"] / rate * 1e3, 4)
        r["fraction_of_roofline"] = round(r["roofline_ms"] / r["p50_ms"], 4)


def ratios(rows: list[dict]) -> list[dict]:
    """Per model and INT8 runtime: edgegate INT8 over the runtime's own flow, FP32 over edgegate
    INT8 (speed-up), and the top-1 points edgegate INT8 loses against FP32."""
    cell = {(r["model"], r["runtime"], r["variant"]): r for r in rows}
    out = []
    for model, runtime, variant in cell:
        if variant != "edgegate_int8":
            continue
        fp32 = cell[(model, runtime.split(":")[0], "fp32")]
        ours, theirs = cell[(model, runtime, variant)], cell[(model, runtime, "native_int8")]
        out.append({
            "model": model, "runtime": runtime,
            "edgegate_over_native": round(ours["p50_ms"] / theirs["p50_ms"], 3),
            "fp32_over_edgegate": round(fp32["p50_ms"] / ours["p50_ms"], 3),
            "top1_loss_points": round(fp32["top1"] - ours["top1"], 2),
            "native_top1_loss_points": round(fp32["top1"] - theirs["top1"], 2),
        })  # fmt: skip
    return out


TOP_OPS = 8  # op types shown per cell in the printed breakdown; the JSON has them all


def _cell_tag(runtime: str, variant: str) -> str:
    short = {"fp32": "fp32", "edgegate_int8": "eg", "native_int8": "native"}[variant]
    return short if ":" not in runtime else f"{short}:{runtime.split(':')[1]}"


def _cell_text(ms: float, nodes: int | None) -> str:
    return f"{ms:8.3f} [{nodes:3d}]" if nodes else "-"


def profile_table(profiles: list[dict], top: int = TOP_OPS) -> str:
    """Per model, one column per ONNX Runtime cell: kernel ms per run [nodes] of the op types
    among each cell's ``top`` costliest, the rest as "other", then the totals, the conv/matmul
    part and the share outside it, and the profiled run's wall time."""
    lines = []
    for model in dict.fromkeys(p["model"] for p in profiles):
        cells = [p for p in profiles if p["model"] == model]
        ops = list(dict.fromkeys(op for c in cells for op in list(c["kernel_ms_per_run"])[:top]))
        ops.sort(key=lambda op: -max(c["kernel_ms_per_run"].get(op, 0.0) for c in cells))
        heads = [_cell_tag(c["runtime"], c["variant"]) for c in cells]
        table = [["op type", *heads]]
        for op in ops:
            table.append([op] + [_cell_text(c["kernel_ms_per_run"].get(op, 0.0),
                                            c["nodes"].get(op)) for c in cells])  # fmt: skip
        other = []
        for c in cells:
            rest = [op for op in c["kernel_ms_per_run"] if op not in ops]
            ms = sum(c["kernel_ms_per_run"][op] for op in rest)
            other.append(_cell_text(ms, sum(c["nodes"][op] for op in rest)))
        table.append(["other", *other])
        table.append(["total kernel"] + [_cell_text(c["total_kernel_ms"], sum(c["nodes"].values()))
                                         for c in cells])  # fmt: skip
        table.append(["conv/matmul"] + [f"{c['compute_kernel_ms']:8.3f}" for c in cells])
        kinds = dict.fromkeys(k for c in cells for k in c.get("conv_kernel_ms_by_kind", {}))
        for kind in kinds:  # where ORT's INT8 convs gain on FP32, and where they lose
            table.append([f"  conv {kind}"] + [
                _cell_text(c["conv_kernel_ms_by_kind"].get(kind, 0.0),
                           c["conv_nodes_by_kind"].get(kind)) for c in cells])  # fmt: skip
        table.append(["outside conv/matmul"]
                     + [f"{c['outside_conv_matmul_share']:8.1%}" for c in cells])  # fmt: skip
        table.append(["profiled run (wall)"] + [f"{c['profiled_run_ms']:8.3f}" for c in cells])
        lines.append(f"\nORT profile, {model}: kernel ms per run [nodes] by op type, median per "
                     f"node over {cells[0]['runs']} profiled runs")  # fmt: skip
        lines += [f"{row[0]:24}" + "".join(f" {v:>15}" for v in row[1:]) for row in table]
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, title: str) -> Path:
    """p50 per cell, grouped by model and runtime, one bar per variant (p90 as the whisker)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgegate.atomic import save_png

    # one group per (model, INT8 runtime); ONNX Runtime's one FP32 cell joins each of its
    # instruction-set variants' groups
    int8_groups = {(r["model"], r["runtime"]) for r in rows if r["variant"] != "fp32"}
    groups = list(dict.fromkeys((r["model"], r["runtime"]) for r in rows
                                if (r["model"], r["runtime"]) in int8_groups))  # fmt: skip
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(groups)), 4))
    width = 0.8 / len(VARIANTS)
    for k, variant in enumerate(VARIANTS):
        xs, p50, err = [], [], []
        for g, (model, runtime) in enumerate(groups):
            cell_runtime = runtime.split(":")[0] if variant == "fp32" else runtime
            match = [r for r in rows if (r["model"], r["runtime"], r["variant"]) ==
                     (model, cell_runtime, variant)]  # fmt: skip
            if match:
                xs.append(g + (k - 1) * width)
                p50.append(match[0]["p50_ms"])
                err.append(match[0]["p90_ms"] - match[0]["p50_ms"])
        ax.bar(xs, p50, width, yerr=[[0] * len(err), err], label=variant, capsize=2)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([f"{m}\n{r}" for m, r in groups], fontsize=7)
    ax.set_ylabel("latency p50 (ms), whisker to p90")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_png(fig, path)


def print_tables(result: dict, title: str) -> None:
    """The latency table (with the roofline columns when measured), the ratios, the host's
    rates and the ORT profile breakdown."""
    config, rows = result["config"], result["cells"]
    print(f"INT8 table: {title}; onnxruntime {ort.__version__}; {config['accuracy']}")
    roof = "roofline" in result
    extra = f" {'M MACs':>8} {'roof ms':>8} {'of roof':>7}" if roof else ""
    print(f"{'model':22} {'runtime':22} {'variant':14} {'p50 ms':>8} {'p90 ms':>8} {'top-1':>7}"
          + extra)  # fmt: skip
    for r in rows:
        extra = (f" {r['macs'] / 1e6:8.1f} {r['roofline_ms']:8.3f} "
                 f"{r['fraction_of_roofline']:7.1%}") if roof else ""  # fmt: skip
        print(f"{r['model']:22} {r['runtime']:22} {r['variant']:14} {r['p50_ms']:8.3f} "
              f"{r['p90_ms']:8.3f} {r['top1']:7.2f}{extra}")  # fmt: skip
    print(f"\n{'model':22} {'runtime':22} {'eg/native':>9} {'fp32/eg':>8} {'loss pts':>9}")
    for r in result["ratios"]:
        print(f"{r['model']:22} {r['runtime']:22} {r['edgegate_over_native']:9.3f} "
              f"{r['fp32_over_edgegate']:8.2f} {r['top1_loss_points']:9.2f}")  # fmt: skip
    if roof:
        print("\n" + host_roofline.summary(result["roofline"]))
        print("  roof ms: the model's conv/matmul MACs at the rate of its precision; of roof: "
              "roof ms / p50 (ExecuTorch rows against ORT's kernel rates)")  # fmt: skip
    if result["profiles"]:
        print(profile_table(result["profiles"]))
        print(f"conv/matmul op types: {', '.join(sorted(ort_profile.COMPUTE_OPS))}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mobilenet-v3-se,mobilenet-v3-large-se,gc-mobilenet")
    ap.add_argument("--checkpoint", action="append", default=[],
                    help="MODEL=FILE: weights for a model without shipped ones")  # fmt: skip
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=100, help="timed rounds per model")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--profile-runs", type=int, default=20,
                    help="profiled runs per ONNX Runtime cell, op breakdown (0: none)")  # fmt: skip
    ap.add_argument("--calib-samples", type=int, default=64)
    ap.add_argument("--no-executorch", dest="executorch", action="store_false")
    ap.add_argument("--no-roofline", dest="roofline", action="store_false",
                    help="skip the host's MAC-rate microbenchmark")  # fmt: skip
    ap.add_argument("--json-out", type=Path, help="write the table and ratios as JSON")
    ap.add_argument("--plot", type=Path, help="write a PNG chart of the table")
    a = ap.parse_args()
    if a.profile_runs < 0:
        raise SystemExit(f"--profile-runs must be 0 or more, got {a.profile_runs}")
    if a.executorch and importlib.util.find_spec("executorch") is None:
        raise SystemExit("executorch is not installed: pass --no-executorch or install it")
    checkpoints = dict(item.split("=", 1) for item in a.checkpoint)
    torch.set_num_threads(a.threads)
    rows: list[dict] = []
    profiles: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in a.models.split(","):
            path = checkpoints.get(model)
            cells, kernels = measure_model(model, Path(path) if path else None,
                                           Path(tmp) / model, a)  # fmt: skip
            rows += cells
            profiles += kernels
    host = f"{platform.machine()} {host_isa()}"
    config = {"size": a.size, "batch": 1, "threads": a.threads, "runs": a.runs,
              "profile_runs": a.profile_runs, "calib_samples": a.calib_samples, "host": host,
              "onnxruntime": ort.__version__,
              "accuracy": f"top-1 on digits test at {TRAIN_SIZE}x{TRAIN_SIZE}",
              "compute_ops": sorted(ort_profile.COMPUTE_OPS)}  # fmt: skip
    result = {"config": config, "cells": rows, "ratios": ratios(rows), "profiles": profiles}
    if a.roofline:
        result["roofline"] = host_roofline.measure(a.threads, host_roofline.RUNS)
        add_roofline(rows, result["roofline"])
    title = f"{a.size}x{a.size}, batch 1, {a.threads} threads, {host}"
    print_tables(result, title)
    if a.json_out:
        a.json_out.write_text(json.dumps(result, indent=2) + "\n")
    if a.plot:
        plot(rows, a.plot, title)


if __name__ == "__main__":
    main()
