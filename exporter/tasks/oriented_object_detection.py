"""Oriented object detection: image → padded ``boxes [B, D, 5]`` (cx, cy, w, h, θ), ``scores``,
``labels``, ``num_detections`` (``obb_resnet18``, ours)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from exporter import capabilities, datasets
from exporter.errors import ArchitectureError
from exporter.tasks import metrics
from exporter.tasks.base import Prediction
from exporter.tasks.object_detection import (
    DETECTION_OPTIONS,
    DETECTION_OUTPUTS,
    ObjectDetectionTask,
    detection_traits,
    scale_target,
)
from exporter.tasks.registry import register_task

if TYPE_CHECKING:
    from pathlib import Path

    from torch import nn

    from exporter.datasets import ValSet
    from exporter.models.spec import ModelSpec


@register_task
class OrientedDetectionTask(ObjectDetectionTask):
    """Rotated boxes; matched by exact rotated IoU for validation."""

    traits = detection_traits("oriented_object_detection", DETECTION_OUTPUTS, DETECTION_OPTIONS,
                              # rotated NMS in plain torch: top-k and gathers, a data-dependent count
                              needs=frozenset({capabilities.TOPK_GATHER, capabilities.DATA_DEPENDENT_SHAPE}),
                              primary_metric="map_50", label="oriented object detection",
                              metric_names={"map_50": "mAP@.5 (rotated IoU)"},
                              val_layout="DOTA: images/* + labelTxt/<stem>.txt (x1 y1 … x4 y4 class difficult)")
    rotated = True

    def architectures(self) -> list[str]:
        return ["obb_resnet18"]

    def build(self, spec: ModelSpec) -> nn.Module:
        from exporter.models.oriented import STRIDE, OrientedDetector

        self.check_architecture(spec.architecture)
        if not spec.num_classes or spec.num_classes < 1:
            raise ArchitectureError(f"{self.name} needs num_classes ≥ 1.", stage="build")
        _, h, w = spec.input_size
        if h % STRIDE or w % STRIDE:
            raise ArchitectureError(f"obb_resnet18 needs an input size divisible by {STRIDE}; got {h}×{w}.",
                                    stage="build")
        return OrientedDetector(spec.num_classes)

    def wrap(self, model: nn.Module, spec: ModelSpec, options: dict[str, Any] | None = None) -> nn.Module:
        from exporter.models.oriented import OrientedOutputs

        return OrientedOutputs(model, options or {}).eval()

    def read_val_set(self, folder: Path, spec: ModelSpec) -> ValSet:
        return datasets.dota(folder, list(spec.class_names))

    def score(self, predictions: list[Prediction], valset: ValSet, spec: ModelSpec,
              calibration: dict[str, float]) -> metrics.Score:
        targets = [scale_target(t, spec.input_size) for t in valset.targets]
        return metrics.rotated_ap(predictions, targets, list(spec.class_names))
