"""Tasks by name. Built-in task modules register themselves when first asked for; modules named in
``$AISTUDIO_TASK_MODULES`` (comma-separated, importable) add tasks of a team's own the same way.

    @register_task
    class ClassificationTask(Task):
        traits = TaskTraits("classification", outputs=("logits",))
"""

from __future__ import annotations

import importlib
import os

from exporter.errors import ArchitectureError
from exporter.options import OptionSpec
from exporter.tasks.base import Task, TaskTraits

PLUGINS_ENV = "AISTUDIO_TASK_MODULES"
BUILTIN_TASKS = ("classification", "regression", "anomaly_detection", "object_detection",
                 "oriented_object_detection", "segmentation", "instance_segmentation")  # module = task name
DEFAULT_TASK = BUILTIN_TASKS[0]  # what an import assumes when neither the user nor the file says
_TASKS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator adding a ``Task`` to the registry under ``cls.traits.name``."""
    _TASKS[cls.traits.name] = cls
    return cls


def _load_tasks() -> None:
    # By name, not by import statement: task modules import this registry.
    plugins = [m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()]
    for module in [f"exporter.tasks.{name}" for name in BUILTIN_TASKS] + plugins:
        importlib.import_module(module)


def task_names() -> list[str]:
    """Registered task names, built-in ones in their display order first."""
    _load_tasks()
    return list(_TASKS)


def get_task(name: str) -> Task:
    """The task registered as ``name``; raises ``ArchitectureError`` listing the known tasks."""
    _load_tasks()
    if name not in _TASKS:
        raise ArchitectureError(f"Unknown task {name!r}; known tasks: {', '.join(sorted(_TASKS))}.", stage="build")
    return _TASKS[name]()


def task_traits(name: str | None) -> TaskTraits | None:
    """The traits of ``name``, or ``None`` for no task or an unknown one."""
    _load_tasks()
    cls = _TASKS.get(name or "")
    return cls.traits if cls else None


def metric_label(task: str | None, key: str) -> str:
    """A metric of ``task`` in words ("top-1 accuracy"), as every page, the CLI and verdicts name it."""
    from exporter.tasks.base import metric_name

    traits = task_traits(task)
    return traits.metric_name(key) if traits else metric_name(key)


def task_label(task: str | None) -> str:
    """A task in words ("object detection"); "—" for none."""
    traits = task_traits(task)
    return traits.display_name if traits else (task or "—").replace("_", " ")


def task_option_specs(task: str | None) -> tuple[OptionSpec, ...]:
    """The options ``task`` adds to every format's (none for an unknown task)."""
    traits = task_traits(task)
    return traits.options if traits else ()
