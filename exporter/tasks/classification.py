"""Classification: image → class logits ``[N, num_classes]`` (torchvision and timm backbones)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from exporter.errors import ArchitectureError
from exporter.tasks import compare
from exporter.tasks.base import Task, TaskTraits
from exporter.tasks.registry import register_task

if TYPE_CHECKING:
    from torch import nn

    from exporter.models.spec import ModelSpec


@register_task
class ClassificationTask(Task):
    """Image → class logits; validation also reports top-1 agreement."""

    traits = TaskTraits("classification", outputs=("logits",), detectable=True)
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

    def agreement(self, pairs: list[compare.Pair]) -> dict[str, float]:
        return compare.top1_agreement(pairs)

    def usage_lines(self, model: dict[str, Any], outputs: list[str]) -> list[str]:
        class_names = model.get("class_names") or []
        pick = "class_names[top]" if class_names else "top"
        return ([f"class_names = {json.dumps(class_names)}"] if class_names else []) + [
            f"top = int({outputs[0]}[0].argmax())", f"print({pick}, {outputs[0]}[0][top])"]
