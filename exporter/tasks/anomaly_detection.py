"""Anomaly detection: image → ``anomaly_map [N, 1, H, W]`` and ``score [N]`` (PaDiM-style, autoencoder)."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from exporter.tasks.base import Task, TaskTraits
from exporter.tasks.registry import register_task

if TYPE_CHECKING:
    from torch import nn

    from exporter.models.spec import ModelSpec


@register_task
class AnomalyDetectionTask(Task):
    """Maps and scores compared tensor by tensor."""

    traits = TaskTraits("anomaly_detection", outputs=("anomaly_map", "score"))

    def architectures(self) -> list[str]:
        from exporter.models.anomaly import ARCHITECTURES

        return list(ARCHITECTURES)

    def build(self, spec: ModelSpec) -> nn.Module:
        from exporter.models.anomaly import ARCHITECTURES

        self.check_architecture(spec.architecture)
        cls = ARCHITECTURES[spec.architecture]
        params = inspect.signature(cls).parameters
        kwargs = {k: v for k, v in spec.extra.items() if k in params and k != "input_size"}
        return cls(spec.input_size, **kwargs)

    def wrap(self, model: nn.Module, spec: ModelSpec, options: dict[str, Any] | None = None) -> nn.Module:
        from exporter.models.anomaly import AnomalyOutputs

        return AnomalyOutputs(model).eval()

    def usage_lines(self, model: dict[str, Any], outputs: list[str]) -> list[str]:
        return ["print(float(score[0]))  # higher = more anomalous; anomaly_map[0, 0] shows where"]
