"""Tasks, one module each (``exporter/tasks/<task>.py``): what a task's models output, its options and
refusals (torch-free ``TaskTraits``), and how to build, wrap and compare its models (``Task``).

Every other module asks ``get_task(name)`` / ``task_traits(name)``; none names a task itself.
"""

from exporter.tasks.base import Task, TaskTraits
from exporter.tasks.registry import (
    DEFAULT_TASK,
    get_task,
    metric_label,
    register_task,
    task_label,
    task_names,
    task_option_specs,
    task_traits,
)

__all__ = ["DEFAULT_TASK", "Task", "TaskTraits", "get_task", "metric_label", "register_task", "task_label",
           "task_names", "task_option_specs", "task_traits"]
