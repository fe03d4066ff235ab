"""Shared helpers for the data tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from edgegate.errors import BadInput


def _raises_one_line(fn: Callable, *args, match: str | None = None, **kwargs) -> str:
    with pytest.raises(BadInput) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert msg and "\n" not in msg, repr(msg)
    if match is not None:
        assert match in msg, msg
    return msg


@pytest.fixture
def bad_input() -> Callable[..., str]:
    """``bad_input(fn, *args, match=...)``: expect a one-line BadInput, return its message."""
    return _raises_one_line
