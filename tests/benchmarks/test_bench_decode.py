"""benchmarks/bench_decode.py: its bookkeeping (ratios, n/a rows, the W4 fallback, the
high-water mark, argument checks) and one tiny real run (gla-lm FP32 in ONNX Runtime, a few
steps, its peak memory read in a child process)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_decode")


def _cell(bench, precision, runtime, decode, prefill, model="m"):
    cell = bench.Cell(model, precision, runtime)
    cell.decode_tok_s, cell.prefill_tok_s = decode, prefill
    return cell


def test_ratios_are_against_fp32_of_the_same_model_and_runtime(bench):
    cells = [
        _cell(bench, "fp32", "ort", 100.0, 1000.0),
        _cell(bench, "int8", "ort", 150.0, 500.0),
        _cell(bench, "fp32", "executorch", 50.0, 2000.0),
        _cell(bench, "int8", "executorch", None, None),
        _cell(bench, "int8", "ort", 80.0, 800.0, model="other"),  # no FP32 row of its own
    ]
    bench.add_ratios(cells)
    assert (cells[0].decode_vs_fp32, cells[0].prefill_vs_fp32) == (1.0, 1.0)
    assert (cells[1].decode_vs_fp32, cells[1].prefill_vs_fp32) == (1.5, 0.5)
    assert cells[3].decode_vs_fp32 is None and cells[3].prefill_vs_fp32 is None
    assert cells[4].decode_vs_fp32 is None


def test_table_prints_na_rows_with_their_reason(bench):
    ok = _cell(bench, "fp32", "ort", 1234.5, 6789.0)
    ok.file_mb, ok.peak_rss_mb, ok.model_rss_mb = 1.65, 82.0, 17.5
    na = bench.Cell("m", "int8", "executorch", na="--streaming is edgegate's brevitas INT8")
    lines = bench.table([ok, na]).splitlines()
    assert lines[0].split()[:3] == ["model", "prec", "runtime"]
    assert "1234.5" in lines[1] and "6789.0" in lines[1] and "1.65" in lines[1]
    assert lines[2].split()[:3] == ["m", "INT8", "executorch"]
    assert lines[2].endswith("n/a: --streaming is edgegate's brevitas INT8")


def test_executorch_int8_streaming_is_na_with_the_pipelines_reason(bench, tmp_path):
    """ExecuTorch's INT8 is PT2E, which `quantize --streaming` refuses before any work."""
    cell = bench.Cell("gla-lm", "int8", "executorch")
    bench.build_cell(cell, tmp_path / "et8", 64, 8, None)
    assert cell.na is not None and "streaming" in cell.na and cell.path is None


def test_export_seq_len_reaches_the_prefill(bench):
    assert bench.export_seq_len(True, 512) == 512  # ExecuTorch: lengths stop at the traced one
    assert bench.export_seq_len(False, 512) == 256  # ONNX Runtime declares twice the traced
    assert bench.export_seq_len(False, 5) == 3


def test_high_water_mark_is_read_from_proc_status(bench):
    status = "Name:\tpython\nVmPeak:\t  900000 kB\nVmHWM:\t  204800 kB\nVmRSS:\t 1024 kB\n"
    assert bench.read_hwm_mb(status) == 200.0
    assert bench.read_hwm_mb() > 10  # this process, read for real


def test_arguments(bench):
    quick = bench.parse_args(["--quick"])
    assert (quick.models, quick.precisions, quick.steps, quick.prefill) == (
        ["gla-lm"],
        ["fp32"],
        16,
        64,
    )
    full = bench.parse_args([])
    assert full.models == ["gla-lm", "gla-lm-25m"] and full.precisions == ["fp32", "int8", "w4"]
    assert (full.steps, full.prefill, full.threads) == (128, 512, 2)
    for bad in (["--precisions", "int4"], ["--runtimes", "tflite"], ["--steps", "0"]):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)
    with pytest.raises(SystemExit):
        bench.parse_checkpoints(["gla-lm-25m"])


def test_tiny_end_to_end_gla_lm_fp32_ort(bench, tmp_path, capsys):
    """The real pipeline export (streaming), decode and prefill timed, memory in a child."""
    json_out = tmp_path / "decode.json"
    bench.main(
        [
            "--models", "gla-lm", "--precisions", "fp32", "--runtimes", "ort",
            "--steps", "4", "--prefill", "16", "--prompt", "4", "--rounds", "1",
            "--work-dir", str(tmp_path / "work"), "--json-out", str(json_out),
        ]
    )  # fmt: skip
    record = json.loads(json_out.read_text())
    [row] = record["rows"]
    assert (row["model"], row["precision"], row["runtime"], row["na"]) == (
        "gla-lm",
        "fp32",
        "ort",
        None,
    )
    assert row["path"].endswith("model.onnx") and row["file_mb"] > 1.0  # 391 k fp32 params
    assert row["decode_tok_s"] > 0 and row["prefill_tok_s"] > 0 and row["decode_vs_fp32"] == 1.0
    assert row["peak_rss_mb"] > row["model_rss_mb"] > 0, row["notes"]
    manifest = json.loads((tmp_path / "work" / "gla-lm-fp32-ort" / "manifest.json").read_text())
    assert [i["name"] for i in manifest["inputs"]] == ["tokens", "state0", "state1", "state2"]
    assert manifest["extra"]["streaming"]["state_outputs"][0] == "new_state0"
    assert "gla-lm  FP32  ort" in capsys.readouterr().out
