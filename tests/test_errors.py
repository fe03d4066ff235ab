"""Whose fault an exception is, read from where it was raised (``raised_in_edgegate``)."""

from __future__ import annotations

import pytest

from edgegate.errors import EXIT_INTERNAL_ERROR, InternalError, ToolchainFailed, raised_in_edgegate


def _caught(call) -> BaseException:
    try:
        call()
    except Exception as exc:
        return exc
    raise AssertionError("expected an exception")


def test_raised_in_edgegates_code(monkeypatch):
    from edgegate.ops import api

    monkeypatch.setattr(api, "_observers", [None])
    assert raised_in_edgegate(_caught(lambda: api._report("GatedLinearScan")))


def test_raised_in_the_users_code():
    def users_model():
        raise ValueError("my shapes")

    assert not raised_in_edgegate(_caught(users_model))


def test_within_narrows_to_one_package(monkeypatch):
    from edgegate.ops import api

    monkeypatch.setattr(api, "_observers", [None])
    exc = _caught(lambda: api._report("GatedLinearScan"))
    assert raised_in_edgegate(exc, within="edgegate.ops")
    assert not raised_in_edgegate(exc, within="edgegate.quant")


@pytest.mark.parametrize(
    ("error", "code"), [(InternalError, EXIT_INTERNAL_ERROR), (ToolchainFailed, 3)]
)
def test_exit_codes(error, code):
    assert error("x").exit_code == code


def test_first_line_of_an_exception():
    from edgegate.errors import first_line

    assert first_line(ValueError("  bad shape\n  at layer 3")) == "bad shape"
    assert first_line(KeyError()) == "KeyError"
    assert first_line(RuntimeError(""), "") == ""
