"""Regression: image → ``[N, num_outputs]`` real values (a classification backbone with a linear head)."""

from __future__ import annotations

from typing import Any

from exporter.tasks.base import TaskTraits
from exporter.tasks.classification import ClassificationTask
from exporter.tasks.compare import Pair
from exporter.tasks.registry import register_task


@register_task
class RegressionTask(ClassificationTask):
    """The classification backbones, compared tensor by tensor (no top-1 to agree on)."""

    traits = TaskTraits("regression", outputs=("predictions",), detectable=True)
    size_key = "num_outputs"

    def agreement(self, pairs: list[Pair]) -> dict[str, float]:
        return {}

    def usage_lines(self, model: dict[str, Any], outputs: list[str]) -> list[str]:
        return [f"print({outputs[0]}[0])  # one value per output"]
