"""Regression: image → ``[N, num_outputs]`` real values (a classification backbone with a linear head)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from exporter import datasets
from exporter.tasks import drawing, metrics
from exporter.tasks.agreement import Pair
from exporter.tasks.base import Prediction, TaskTraits
from exporter.tasks.classification import ClassificationTask
from exporter.tasks.registry import register_task

if TYPE_CHECKING:
    from pathlib import Path

    from PIL import Image

    from exporter.datasets import ValSet
    from exporter.models.spec import ModelSpec


@register_task
class RegressionTask(ClassificationTask):
    """The classification backbones, compared tensor by tensor (no top-1 to agree on)."""

    traits = TaskTraits("regression", outputs=("predictions",), detectable=True, primary_metric="mae",
                        higher_is_better=False, val_layout="images/* + targets.csv (file,<output names…>)")
    size_key = "num_outputs"

    def agreement(self, pairs: list[Pair]) -> dict[str, float]:
        return {}

    def read_val_set(self, folder: Path, spec: ModelSpec) -> ValSet:
        names = spec.extra.get("output_names") or [str(i) for i in range(spec.num_classes or 1)]
        return datasets.regression_csv(folder, [str(n) for n in names])

    def score(self, predictions: list[Prediction], valset: ValSet, spec: ModelSpec,
              calibration: dict[str, float]) -> metrics.Score:
        values = np.stack([p[self.traits.outputs[0]] for p in predictions])
        names = spec.extra.get("output_names") or []
        return metrics.regression(values, np.stack(valset.targets), [str(n) for n in names])

    def at_chance(self, values: dict[str, float], spec: ModelSpec) -> bool:
        return values["r2"] <= 0.0

    def disagreement(self, reference: Prediction, exported: Prediction, calibration: dict[str, float]) -> float:
        name = self.traits.outputs[0]
        return float(np.abs(reference[name] - exported[name]).max())

    def draw(self, image: Image.Image, prediction: Prediction, spec: ModelSpec, calibration: dict[str, float]) -> None:
        names = [str(n) for n in spec.extra.get("output_names") or []]
        values = np.asarray(prediction[self.traits.outputs[0]]).reshape(-1)
        drawing.caption(image, " ".join(f"{drawing.name_of(i, names)}={v:.3g}" for i, v in enumerate(values[:4])))

    def usage_lines(self, model: dict[str, Any], outputs: list[str]) -> list[str]:
        return [f"print({outputs[0]}[0])  # one value per output"]
