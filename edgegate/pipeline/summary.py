"""Human summaries of stage results: the rows the CLI prints and report.md holds."""

from __future__ import annotations

from typing import Any

Rows = list[tuple[str, str]]


def summary_sections(summary: dict[str, Any]) -> list[tuple[str, Rows]]:
    """Rows of the human summary (the Markdown report and the CLI table share them)."""
    head = [
        ("model", summary["model"]),
        ("weights", summary["export"]["weights"]),
        ("target", summary["target"]),
    ]
    sections = [
        ("Summary", head + validation_rows(summary["validate"]) + bench_rows(summary["bench"]))
    ]
    if "int8" in summary:
        block = summary["int8"]
        rows = int8_rows(block["quantize"])
        rows += validation_rows(block["validate"]) + bench_rows(block["bench"])
        sections.append(("INT8", rows))
    return sections


def validation_rows(val: dict[str, Any]) -> Rows:
    rows = [("parity", "PASS" if val["passed"] else "FAIL")]
    rows += [("failure", failure) for failure in val.get("failures", [])]
    for name, m in val["outputs"].items():
        rows.append((f"{name}: max abs / SNR", f"{m['max_abs']:.2e} / {m['snr_db']} dB"))
    if val.get("top1_agreement") is not None:
        rows.append(("top-1 agreement", f"{val['top1_agreement']:.2f} %"))
    if val.get("decisive_top1_agreement") is not None:
        rows.append(("  where not a near-tie", f"{val['decisive_top1_agreement']:.2f} %"))
    elif val.get("top1_agreement") is not None and val.get("tolerance", {}).get(
        "agreement_suffices"
    ):
        rows.append(("  where not a near-tie", "no row is decisive"))
    rows += kernel_rows(val)
    rows += range_rows(val.get("ranges") or {})
    rows += localization_rows(val.get("localization"))
    if val.get("accuracy"):
        ref, cand = val["accuracy"]["reference"], val["accuracy"]["candidate"]
        key = "perplexity" if "perplexity" in ref else "top1"
        runtime = val.get("runtime", "export")
        rows.append((f"{key}: torch / {runtime}", f"{ref[key]:.4g} / {cand[key]:.4g}"))
    if "two_stage" in val:
        ts = val["two_stage"]
        rows += [
            ("two-stage: stops negatives", f"{ts['stop_rate_negatives']:.1f} %"),
            ("two-stage: passes positives", f"{ts['pass_rate_positives']:.1f} %"),
            ("two-stage: accuracy", f"{ts['system_accuracy']:.2f} %"),
        ]
    return rows


def range_rows(checks: dict[str, Any]) -> Rows:
    """One row per graph checked over its declared ranges: each range, and how many of the
    points run there matched."""
    rows = []
    for stem, check in checks.items():
        probes = check["probes"]
        passed = sum(1 for p in probes if p["passed"])
        spans = ", ".join(
            f"{r['name']} {r['min']}..{r['max']}"
            if r["min"] != r["max"]
            else f"{r['name']} {r['min']}"
            for r in check["ranges"]
        )
        rows.append((f"{stem} over its ranges", f"{passed}/{len(probes)} points match ({spans})"))
    return rows


def judge_rows(verdict: dict[str, Any]) -> Rows:
    """A device run's verdict: validate's rows, then where it ran and how fast."""
    rows = validation_rows(verdict)
    device = verdict.get("device") or {}
    where = " ".join(str(device[k]) for k in ("machine", "system") if device.get(k))
    rows.append(("device", f"{verdict['runtime']} {verdict.get('runtime_version') or ''} on "
                           f"{where or 'an unnamed device'}"))  # fmt: skip
    lat = verdict.get("latency_ms")
    if lat:
        rows.append(
            ("device latency p50 / p90 / p99",
             f"{lat['p50']:.3f} / {lat['p90']:.3f} / {lat['p99']:.3f} ms ({lat['runs']} runs)")
        )  # fmt: skip
    return rows


def localization_rows(loc: dict[str, Any] | None) -> Rows:
    """The first module the export departs from (or why there is no answer)."""
    if not loc:
        return []
    if "skipped" in loc:
        return [("localization", f"skipped: {loc['skipped']}")]
    first = loc["first_divergent"]
    if first is None:
        return [("localization", f"all {len(loc['layers'])} mapped layers within tolerance")]
    detail = f"max abs {first['max_abs']:.2e}, SNR {first['snr_db']} dB"
    return [("first divergent module", f"{first['module']} (ONNX {first['onnx_node']}): {detail}")]


def bench_rows(timed: dict[str, Any]) -> Rows:
    lat = timed["latency_ms"]
    shapes = timed.get("input_shapes", {})
    rows = [
        *((f"input {name}", "x".join(map(str, shape))) for name, shape in shapes.items()),
        ("latency p50 / p90 / p99", f"{lat['p50']:.3f} / {lat['p90']:.3f} / {lat['p99']:.3f} ms"),
        ("throughput", f"{timed['throughput_per_s']:.1f} /s"),
        ("peak RSS", f"{timed['peak_rss_mb']:.0f} MB"),
    ]
    if "two_stage" in timed:
        ts = timed["two_stage"]
        rows.append(
            (
                f"stream latency/sample ({100 * ts['positive_rate']:.0f} % positive)",
                f"{ts['mean_latency_ms']:.3f} ms = {ts['ratio_to_full']:.2f}x full model"
                + (
                    f" ({ts['median_ratio_to_full']:.2f}x by medians)"
                    if ts.get("median_ratio_to_full") is not None
                    else ""
                ),
            )
        )
    return rows


def kernel_rows(result: dict[str, Any]) -> Rows:
    """Fused integer kernels vs the dequantized graph, and where that is not a near-tie."""
    overall = result.get("kernel_agreement")
    if overall is None:
        return []
    rows = [("fused kernels vs dequantized", f"{overall:.2f} % top-1")]
    decisive = result.get("kernel_decisive_agreement")
    if decisive is not None and decisive != overall:
        rows.append(("  where not a near-tie", f"{decisive:.2f} %"))
    return rows


def gate_rows(gates: dict[str, Any] | None) -> Rows:
    """Recognised gates by family, the worst flip rate, and what was left unrecognised."""
    if gates is None:
        return []
    families: dict[str, int] = {}
    for gate in gates["recognised"]:
        families[gate["family"]] = families.get(gate["family"], 0) + 1
    text = f"{len(gates['recognised'])} recognised"
    if families:
        text += " (" + ", ".join(f"{name} {n}" for name, n in families.items()) + ")"
    rows = [("gates", text)]
    if gates.get("max_flip_rate") is not None:
        rows.append(("  flips (fake-quant vs float)", f"at most {gates['max_flip_rate']:.2f} %"))
    unrecognised = [f"{i['path'] or '<root>'} ({i['what']})" for i in gates["unrecognised"]]
    if unrecognised:
        rows.append(("  unrecognised", ", ".join(unrecognised)))
    return rows


def int8_rows(result: dict[str, Any]) -> Rows:
    """Human summary of a quantize run (the CLI table and deploy's report share it)."""
    acc = result["accuracy"]
    key = "perplexity" if "perplexity" in acc["float"] else "top1"
    quant = result["quant"]
    rows = [("verdict", "PASS" if result["passed"] else "FAIL")]
    rows += [("failure", failure) for failure in result.get("failures", [])]
    rows += [("profile / method", f"{quant['profile']} / {quant['method']}")]
    calib = quant["calibration"]
    rows.append(("calibration", f"{calib['samples']} samples of {calib['source']}"))
    if quant.get("weight_granularity") == "tensor":
        rows.append(("weight scales", "one per tensor"))
    if result.get("equalization") is not None:
        rows.append(("equalization", result["equalization"]["line"]))
    rows += [(f"{stage} {key}", f"{acc[stage][key]:.4g}") for stage in acc]
    agreement = result["onnx_vs_fake_quant"]
    rows.append(("onnx vs fake-quant top-1", f"{agreement['top1_agreement']:.2f} %"))
    decisive = agreement["decisive_top1_agreement"]
    decisive_text = "no row is decisive" if decisive is None else f"{decisive:.2f} %"
    rows.append(("  where not a near-tie", decisive_text))
    rows += kernel_rows(result)
    if "sizes" in result:
        sizes = result["sizes"]
        rows.append(
            (
                "size vs fp32 export",
                f"{sizes['export_bytes']:,} / {sizes['fp32_export_bytes']:,} bytes "
                f"({sizes['ratio']:.3f}x)",
            )
        )
    if "gate_flip_rate" in result:
        rows.append(
            ("gate flips (onnx vs float)", f"{result['gate_flip_rate']['onnx_vs_float']} %")
        )
    rows += gate_rows(result.get("gates"))
    recovery = result.get("qat_recovery")
    if recovery is not None and recovery["recovered_fraction"] is not None:
        rows.append(("QAT recovered", f"{100 * recovery['recovered_fraction']:.0f} % of PTQ loss"))
    if "streaming" in result:
        stream = result["streaming"]
        state = "int8" if stream["state_quantized"] else "float"
        rows.append(("streaming states", f"{', '.join(stream['state_inputs'])} ({state})"))
    if "timestep" in result:
        ts = result["timestep"]
        quarters = ", ".join("inf" if v is None else f"{v:.1f}" for v in ts["quarter_snr_db"])
        rows.append(("logit SNR per quarter", f"{quarters} dB"))
        growth = ts["growth_last_over_first"]
        rows.append(("error growth last/first", "inf" if growth is None else f"{growth:.2f}x"))
    return rows
