"""The only orchestrator: one module per stage, tied to the targets through the registry.

models -> quant -> exporters -> runtime -> validate is the data flow; each stage module here
runs one CLI command over those layers and returns a plain dict the CLI prints.
"""

from edgegate.pipeline.artifacts import Artifact, open_artifact
from edgegate.pipeline.bench import bench
from edgegate.pipeline.deploy import DEFAULT_DEPLOY_MODEL, INT8_DIR, deploy
from edgegate.pipeline.export import export
from edgegate.pipeline.summary import bench_rows, int8_rows, summary_sections, validation_rows
from edgegate.pipeline.tasks import TASKS, Task, TaskData, resolve_task
from edgegate.pipeline.validate import validate
from edgegate.pipeline.zoo import evaluate, model_table, train

__all__ = [
    "DEFAULT_DEPLOY_MODEL",
    "INT8_DIR",
    "TASKS",
    "Artifact",
    "Task",
    "TaskData",
    "bench",
    "bench_rows",
    "deploy",
    "evaluate",
    "export",
    "int8_rows",
    "model_table",
    "open_artifact",
    "quantize",
    "resolve_task",
    "summary_sections",
    "train",
    "validate",
    "validation_rows",
]


def __getattr__(name: str):
    """``quantize`` loads brevitas, so it is imported on first use, not with the package."""
    if name == "quantize":
        from edgegate.pipeline.quantize import quantize

        return quantize
    raise AttributeError(f"module 'edgegate.pipeline' has no attribute '{name}'")
