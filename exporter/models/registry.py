"""Task adapters by name: each knows its architectures, how to build and how to wrap for export.

    @register_task("classification")
    class ClassificationTask(TaskAdapter): ...
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from exporter.errors import ArchitectureError
from exporter.models.spec import ModelSpec

if TYPE_CHECKING:
    from torch import nn

_TASKS: dict[str, type[TaskAdapter]] = {}


class TaskAdapter:
    """Base of every task: builds the trained ``nn.Module`` and its export wrapper."""

    task: ClassVar[str] = ""
    input_names: ClassVar[tuple[str, ...]] = ("input",)
    output_names: ClassVar[tuple[str, ...]] = ("output",)

    def architectures(self) -> list[str]:
        """Architecture names this task can build."""
        raise NotImplementedError

    def build(self, spec: ModelSpec) -> nn.Module:
        """The module whose ``state_dict`` the checkpoint holds (random init)."""
        raise NotImplementedError

    def wrap(self, model: nn.Module, spec: ModelSpec) -> nn.Module:
        """An eval-mode module returning a tuple of tensors in ``output_names`` order."""
        raise NotImplementedError

    def check_architecture(self, architecture: str) -> None:
        """Raise ``ArchitectureError`` naming close matches when the name is unknown."""
        known = self.architectures()
        if architecture not in known:
            import difflib

            near = difflib.get_close_matches(architecture, known, n=4) or known[:6]
            raise ArchitectureError(
                f"Unknown architecture {architecture!r} for task {self.task!r}; "
                f"did you mean one of: {', '.join(near)}?", stage="build")


def register_task(name: str):
    """Class decorator adding a ``TaskAdapter`` to the registry under ``name``."""

    def decorate(cls: type[TaskAdapter]) -> type[TaskAdapter]:
        cls.task = name
        _TASKS[name] = cls
        return cls

    return decorate


def task_names() -> list[str]:
    """Registered task names."""
    _load_builtin_tasks()
    return sorted(_TASKS)


def get_task(name: str) -> TaskAdapter:
    """The adapter for ``name``; raises ``ArchitectureError`` listing the known tasks."""
    _load_builtin_tasks()
    if name not in _TASKS:
        raise ArchitectureError(
            f"Unknown task {name!r}; known tasks: {', '.join(sorted(_TASKS))}.", stage="build")
    return _TASKS[name]()


def _load_builtin_tasks() -> None:
    # Imported lazily: task modules import torch, the registry itself must not.
    from exporter.models import anomaly, classification  # noqa: F401
