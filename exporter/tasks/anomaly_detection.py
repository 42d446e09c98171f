"""Anomaly detection: image → ``anomaly_map [N, 1, H, W]`` and ``score [N]`` (PaDiM-style, autoencoder)."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

import numpy as np

from exporter import datasets
from exporter.tasks import drawing, metrics
from exporter.tasks.base import Prediction, Task, TaskTraits
from exporter.tasks.registry import register_task

if TYPE_CHECKING:
    from pathlib import Path

    from PIL import Image
    from torch import nn

    from exporter.datasets import ValSet
    from exporter.models.spec import ModelSpec


def _pixel_pairs(predictions: list[Prediction], valset: ValSet) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Maps and ground-truth masks (resized to the map) of the images whose truth is known per pixel:
    every good image (all normal) and every defect image that has a mask. ``None`` without any mask."""
    from PIL import Image

    if not any(mask is not None for _, mask in valset.targets):
        return None, None
    maps, masks = [], []
    for prediction, (label, mask) in zip(predictions, valset.targets, strict=True):
        anomaly_map = prediction["anomaly_map"].reshape(prediction["anomaly_map"].shape[-2:])
        if label == 1 and mask is None:
            continue
        truth = np.zeros(anomaly_map.shape, np.uint8)
        if mask is not None:
            with Image.open(mask) as img:
                resized = img.convert("L").resize(anomaly_map.shape[::-1], Image.NEAREST)
            truth = (np.asarray(resized) > 0).astype(np.uint8)
        maps.append(anomaly_map)
        masks.append(truth)
    return np.stack(maps), np.stack(masks)


@register_task
class AnomalyDetectionTask(Task):
    """Maps and scores compared tensor by tensor."""

    traits = TaskTraits("anomaly_detection", outputs=("anomaly_map", "score"), primary_metric="image_auroc",
                        label="anomaly detection",
                        val_layout="MVTec AD: good/*, <defect>/*, optional ground_truth/<defect>/<name>_mask.png")

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

    def read_val_set(self, folder: Path, spec: ModelSpec) -> ValSet:
        return datasets.mvtec(folder)

    def calibrate(self, reference: list[Prediction], valset: ValSet, spec: ModelSpec | None = None) -> dict[str, float]:
        if spec is not None and spec.extra.get("threshold") is not None:  # the model's own (anomalib's, normalised)
            return {"threshold": float(spec.extra["threshold"])}
        scores = np.array([float(p["score"]) for p in reference])
        return {"threshold": metrics.f1_threshold(scores, np.array([label for label, _ in valset.targets]))}

    def score(self, predictions: list[Prediction], valset: ValSet, spec: ModelSpec,
              calibration: dict[str, float]) -> metrics.Score:
        scores = np.array([float(p["score"]) for p in predictions])
        labels = np.array([label for label, _ in valset.targets])
        maps, masks = _pixel_pairs(predictions, valset)
        return metrics.anomaly(scores, labels, calibration["threshold"], maps, masks)

    def at_chance(self, values: dict[str, float], spec: ModelSpec) -> bool:
        return values["image_auroc"] <= 0.55

    def disagreement(self, reference: Prediction, exported: Prediction, calibration: dict[str, float]) -> float:
        threshold = calibration.get("threshold", 0.0)
        flipped = (float(reference["score"]) >= threshold) != (float(exported["score"]) >= threshold)
        return float(flipped) * (1.0 + abs(float(reference["score"]) - float(exported["score"])))

    def draw(self, image: Image.Image, prediction: Prediction, spec: ModelSpec, calibration: dict[str, float]) -> None:
        score, threshold = float(prediction["score"]), calibration.get("threshold", 0.0)
        anomaly_map = np.asarray(prediction["anomaly_map"]).reshape(np.shape(prediction["anomaly_map"])[-2:])
        drawing.overlay(image, (anomaly_map >= threshold).astype(np.uint8), skip=0)  # where the map passes it
        anomalous = score >= threshold
        drawing.caption(image, f"{'ANOMALY' if anomalous else 'normal'} {score:.3g}",
                        fill=(255, 90, 90) if anomalous else (255, 255, 255))

    def usage_lines(self, model: dict[str, Any], outputs: list[str]) -> list[str]:
        return ["print(float(score[0]))  # higher = more anomalous; anomaly_map[0, 0] shows where"]
