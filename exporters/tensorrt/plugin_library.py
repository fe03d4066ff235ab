"""Load edgegate's plugin library into TensorRT's plugin registry once per process.

``IPluginRegistry.load_library`` registers every creator the library's ``getCreators`` lists;
TensorRT 10.3 documents that it fails when those creators are already registered. The builder
(``--build``) and the runner both need the plugins, often in one process: a second load would
fail, and a failure that is ignored leaves the parser or the runtime without the plugins. So
each library is loaded once, remembered by its resolved path, and the load is checked twice:
TensorRT's handle (None on failure) and every creator found in the registry afterwards.
A failure names the file: exit 3, the library being the kit's toolchain output.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from edgegate.errors import ToolchainFailed
from edgegate.exporters.onnx.schemas import PLUGIN_ATTRS
from edgegate.exporters.tensorrt.onnx_model import PLUGIN_OPS

# resolved path -> what load_library returned (TensorRT's handle; kept so it is not released)
_LOADED: dict[str, object] = {}


def load_once(
    path: str | os.PathLike[str],
    load: Callable[[str], object | None],
    missing: Callable[[], Iterable[str]] = tuple,
) -> bool:
    """Load the library at ``path`` with ``load`` (``registry.load_library``) unless this
    process already did; True when this call loaded it. ``load`` returning None, or
    ``missing()`` naming creators still absent after the load, raises ToolchainFailed (exit 3)."""
    key = os.fspath(Path(path).resolve())
    if key in _LOADED:
        return False
    handle = load(key)
    absent = [] if handle is None else sorted(missing())
    if handle is None or absent:
        why = f"its creators {', '.join(absent)} are not registered" if absent else "load failed"
        raise ToolchainFailed(
            f"toolchain failure: TensorRT could not load the plugin library '{key}' ({why}; "
            "built for another TensorRT or GPU? TensorRT's log above says why): rebuild it "
            "with the kit's build.sh"
        )
    _LOADED[key] = handle
    return True


def load_plugins(trt, path: str | os.PathLike[str]) -> bool:
    """``load_once`` through ``trt.get_plugin_registry()`` (``trt``: the tensorrt module),
    checking that the registry then holds a creator for each of edgegate's plugin ops."""
    registry = trt.get_plugin_registry()

    def missing() -> list[str]:
        namespace, version = PLUGIN_ATTRS["plugin_namespace"], PLUGIN_ATTRS["plugin_version"]
        return [op for op in PLUGIN_OPS if registry.get_creator(op, version, namespace) is None]

    return load_once(path, registry.load_library, missing)


def loaded_libraries() -> list[str]:
    """The libraries this process has loaded, by resolved path."""
    return sorted(_LOADED)
