"""Model builders by task; see ``registry.py`` for the adapter interface."""

from exporter.models.registry import TaskAdapter, get_task, register_task, task_names
from exporter.models.spec import ModelSpec

__all__ = ["ModelSpec", "TaskAdapter", "get_task", "register_task", "task_names"]
