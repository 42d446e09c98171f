"""Task adapters by name: each knows its architectures, how to build and how to wrap for export.

    @register_task("classification")
    class ClassificationTask(TaskAdapter): ...
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from exporter.errors import ArchitectureError
from exporter.models.spec import ModelSpec
from exporter.options import OptionSpec

if TYPE_CHECKING:
    from torch import nn

_TASKS: dict[str, type[TaskAdapter]] = {}


class TaskAdapter:
    """Base of every task: builds the trained ``nn.Module`` and its export wrapper."""

    task: ClassVar[str] = ""
    input_names: ClassVar[tuple[str, ...]] = ("input",)
    output_names: ClassVar[tuple[str, ...]] = ("output",)
    task_options: ClassVar[tuple[OptionSpec, ...]] = ()  # e.g. max_detections; parsed with the format's
    input_normalization: ClassVar[dict[str, list[float]] | None] = None  # set: the graph normalises itself

    def architectures(self) -> list[str]:
        """Architecture names this task can build."""
        raise NotImplementedError

    def build(self, spec: ModelSpec) -> nn.Module:
        """The module whose ``state_dict`` the checkpoint holds (random init)."""
        raise NotImplementedError

    def wrap(self, model: nn.Module, spec: ModelSpec, options: dict[str, Any] | None = None) -> nn.Module:
        """An eval-mode module returning a tuple of tensors in ``outputs(options)`` order."""
        raise NotImplementedError

    def outputs(self, options: dict[str, Any]) -> tuple[str, ...]:
        """Output names for these options (segmentation names its output ``mask`` or ``logits``)."""
        return self.output_names

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
    from exporter.models import anomaly, classification, detection, oriented, segmentation  # noqa: F401
