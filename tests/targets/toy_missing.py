"""The toy target again, needing a runtime library this machine does not have."""

from __future__ import annotations

from tests.targets.toy import ToyTarget


class MissingLibraryTarget(ToyTarget):
    name = "toy-missing"
    requires = ("torch", "edgegate_toy_runtime_that_is_not_installed")
    install_hint = "pip install edgegate-toy-runtime"


TARGET = MissingLibraryTarget()
