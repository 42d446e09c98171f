"""Classification: image → class logits ``[N, num_classes]`` (torchvision and timm backbones)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np

from exporter import datasets
from exporter.errors import ArchitectureError, DatasetError
from exporter.tasks import agreement, drawing, metrics
from exporter.tasks.base import Prediction, Task, TaskTraits
from exporter.tasks.registry import register_task

if TYPE_CHECKING:
    from pathlib import Path

    from PIL import Image
    from torch import nn

    from exporter.datasets import ValSet
    from exporter.models.spec import ModelSpec


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()


@register_task
class ClassificationTask(Task):
    """Image → class logits; validation also reports top-1 agreement."""

    traits = TaskTraits("classification", outputs=("logits",), detectable=True, primary_metric="top1_accuracy",
                        label="classification",
                        val_layout="ImageFolder: <class_name>/*.png|jpg, one folder per class of the model")
    size_key = "num_classes"

    def architectures(self) -> list[str]:
        from exporter.models.classification import torchvision_classifiers

        return list(torchvision_classifiers())

    def check_architecture(self, architecture: str) -> None:
        from exporter.models.classification import TIMM_PREFIX

        if not architecture.startswith(TIMM_PREFIX):  # timm names are checked by timm itself
            super().check_architecture(architecture)

    def build(self, spec: ModelSpec) -> nn.Module:
        from exporter.models.classification import build_torchvision_classifier

        self.check_architecture(spec.architecture)
        if not spec.num_classes or spec.num_classes <= 0:
            raise ArchitectureError(
                f"{self.name} needs a positive {self.size_key} in the checkpoint's "
                "hyper_parameters or experiment.json.", stage="build")
        return build_torchvision_classifier(spec.architecture, spec.num_classes, spec.input_size)

    def wrap(self, model: nn.Module, spec: ModelSpec, options: dict[str, Any] | None = None) -> nn.Module:
        from exporter.models.classification import FirstOutput

        return FirstOutput(model).eval()

    def agreement(self, pairs: list[agreement.Pair]) -> dict[str, float]:
        return agreement.top1_agreement(pairs)

    def read_val_set(self, folder: Path, spec: ModelSpec) -> ValSet:
        if not spec.class_names:
            raise DatasetError("The checkpoint names no class_names, so class folders cannot be matched to "
                               "outputs; add class_names to its hyper_parameters or experiment.json.")
        return datasets.image_folder(folder, list(spec.class_names))

    def score(self, predictions: list[Prediction], valset: ValSet, spec: ModelSpec,
              calibration: dict[str, float]) -> metrics.Score:
        logits = np.stack([p[self.traits.outputs[0]] for p in predictions])
        return metrics.classification(logits, np.array(valset.targets), list(spec.class_names))

    def at_chance(self, values: dict[str, float], spec: ModelSpec) -> bool:
        return values["top1_accuracy"] <= 1.0 / max(2, spec.num_classes or 2) + 0.05

    def disagreement(self, reference: Prediction, exported: Prediction, calibration: dict[str, float]) -> float:
        ref, out = reference[self.traits.outputs[0]], exported[self.traits.outputs[0]]
        flipped = int(ref.argmax()) != int(out.argmax())
        return float(flipped) * (1.0 + float(np.abs(_softmax(ref) - _softmax(out)).max()))

    def draw(self, image: Image.Image, prediction: Prediction, spec: ModelSpec, calibration: dict[str, float]) -> None:
        probabilities = _softmax(prediction[self.traits.outputs[0]])
        top = int(probabilities.argmax())
        drawing.caption(image, f"{drawing.name_of(top, spec.class_names)} {probabilities[top]:.2f}")

    def usage_lines(self, model: dict[str, Any], outputs: list[str]) -> list[str]:
        class_names = model.get("class_names") or []
        pick = "class_names[top]" if class_names else "top"
        return ([f"class_names = {json.dumps(class_names)}"] if class_names else []) + [
            f"top = int({outputs[0]}[0].argmax())", f"print({pick}, {outputs[0]}[0][top])"]
