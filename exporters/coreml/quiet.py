"""coremltools without its noise: import-time notices (untested torch/scikit-learn versions,
proxies missing off macOS) and per-pass progress bars would bury edgegate's own progress and
break `--json` on stdout. Errors still raise."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    # coremltools imports torchao where installed, whose import logs a torch deprecation
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield


def coremltools():
    """The coremltools module, imported quietly."""
    with quiet():
        import coremltools as ct
    return ct
