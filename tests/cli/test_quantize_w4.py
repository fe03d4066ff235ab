"""`edgegate quantize --scheme w4`: every bad input is exit 2, one line, before any work."""

from __future__ import annotations

import pytest

from tests.conftest import assert_one_line_error


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--qat-epochs", "1"], "--qat-epochs does not apply to --scheme w4"),
        (["--report"], "--report does not apply to --scheme w4"),
        (["--streaming", "--quantize-state"], "--quantize-state does not apply to --scheme w4"),
        (["--method", "mse"], "--method mse does not apply to --scheme w4"),
        (["--equalize"], "--equalize does not apply to --scheme w4"),
        (["--weight-granularity", "tensor"], "--weight-granularity tensor does not apply"),
        (["--group-size", "24"], "power of two >= 16"),
        (["--group-size", "64"], "does not divide the 96 input features of layer"),
        (["--profile", "executorch", "--group-size", "16"], "a multiple of 32 (executorch)"),
        (["--scheme", "w3"], "unknown --scheme 'w3'"),
    ],
)
def test_bad_w4_options_exit_2(run_cli, tmp_path, args, message):
    result = run_cli("quantize", "gla-lm", "--scheme", "w4", *args, "-o", str(tmp_path / "o"))
    assert_one_line_error(result, message, code=2)
    assert not (tmp_path / "o").exists()


def test_w4_on_a_model_without_linear_layers_exits_2(run_cli, tmp_path):
    result = run_cli(
        "quantize", "tests.cli.w4_models:conv_only", "--trust-code", "--task", "image",
        "--scheme", "w4",
        "-o", str(tmp_path / "o"),
    )  # fmt: skip
    assert_one_line_error(result, "finds no linear layer to quantize", code=2)
    assert not (tmp_path / "o").exists()
