"""Semantic segmentation: image → ``logits [B, C, H, W]`` or ``mask [B, H, W]`` (torchvision
deeplabv3_*, fcn_*, lraspp_*)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from exporter import datasets
from exporter.errors import ArchitectureError
from exporter.options import OptionSpec
from exporter.tasks import agreement, drawing, metrics
from exporter.tasks.base import Prediction, Task, TaskTraits
from exporter.tasks.registry import register_task

if TYPE_CHECKING:
    from pathlib import Path

    from PIL import Image
    from torch import nn

    from exporter.datasets import ValSet
    from exporter.models.spec import ModelSpec

SEGMENTATION_OPTIONS = (
    OptionSpec("output", "choice", "logits",
               "logits: [B, C, H, W] scores; mask: [B, H, W] uint8 class ids (argmax in the graph).",
               choices=("logits", "mask"), label="Output"),
    OptionSpec("resolution", "choice", "input",
               "input: outputs at the input size; stride: the classifier's native (smaller) output.",
               choices=("input", "stride"), label="Output resolution", advanced=True),
)


@register_task
class SegmentationTask(Task):
    """Class maps compared by pixel agreement."""

    traits = TaskTraits("segmentation", outputs=("logits",), options=SEGMENTATION_OPTIONS, primary_metric="miou",
                        label="semantic segmentation",
                        val_layout="images/* + masks/<stem>.png (class-index PNG, 255 = ignore)")

    def architectures(self) -> list[str]:
        from exporter.models.segmentation import torchvision_segmenters

        return list(torchvision_segmenters())

    def outputs(self, options: dict[str, Any]) -> tuple[str, ...]:
        return ("mask",) if options.get("output") == "mask" else ("logits",)

    def build(self, spec: ModelSpec) -> nn.Module:
        import torchvision

        from exporter.models.segmentation import MAX_MASK_CLASSES

        self.check_architecture(spec.architecture)
        if not spec.num_classes or not 2 <= spec.num_classes <= MAX_MASK_CLASSES:
            raise ArchitectureError(f"segmentation needs num_classes between 2 and {MAX_MASK_CLASSES} "
                                    "(background included).", stage="build")
        kwargs: dict[str, Any] = {"weights": None, "weights_backbone": None, "num_classes": spec.num_classes}
        if not spec.architecture.startswith("lraspp"):
            kwargs["aux_loss"] = bool(spec.extra.get("aux_loss", False))
        return torchvision.models.get_model(spec.architecture, **kwargs)

    def wrap(self, model: nn.Module, spec: ModelSpec, options: dict[str, Any] | None = None) -> nn.Module:
        from exporter.models.segmentation import SegmentationOutputs

        return SegmentationOutputs(model, options or {}).eval()

    def compare(self, pairs: list[agreement.Pair], output_names: tuple[str, ...], tolerance: float, n_samples: int,
                settings: dict[str, Any]) -> agreement.TaskCheck:
        floor = settings.get("min_agreement")  # reduced precision: task agreement decides, ties and all
        return agreement.segmentation(pairs, output_names, n_samples, floor or agreement.MIN_PIXEL_AGREEMENT,
                                      tie=None if floor else tolerance)

    def read_val_set(self, folder: Path, spec: ModelSpec) -> ValSet:
        return datasets.masks(folder, spec.num_classes or 2)

    def split_outputs(self, outputs: dict[str, np.ndarray]) -> list[Prediction]:
        """One class map per image (``[H, W]`` uint8): logits are reduced here to keep memory small."""
        name, values = next(iter(outputs.items()))
        classes = values.argmax(1) if values.ndim == 4 else values
        return [{"classes": row.astype(np.uint8)} for row in classes]

    def score(self, predictions: list[Prediction], valset: ValSet, spec: ModelSpec,
              calibration: dict[str, float]) -> metrics.Score:
        from PIL import Image

        height, width = predictions[0]["classes"].shape
        targets = []
        for mask in valset.targets:
            with Image.open(mask) as img:
                targets.append(np.asarray(img.resize((width, height), Image.NEAREST)))
        names = list(spec.class_names) or [str(i) for i in range(spec.num_classes or 2)]
        return metrics.segmentation(np.stack([p["classes"] for p in predictions]), np.stack(targets), names,
                                    datasets.IGNORE_INDEX)

    def at_chance(self, values: dict[str, float], spec: ModelSpec) -> bool:
        return values["miou"] <= 0.05

    def disagreement(self, reference: Prediction, exported: Prediction, calibration: dict[str, float]) -> float:
        return float((reference["classes"] != exported["classes"]).mean())

    def draw(self, image: Image.Image, prediction: Prediction, spec: ModelSpec, calibration: dict[str, float]) -> None:
        drawing.overlay(image, prediction["classes"])

    def usage_lines(self, model: dict[str, Any], outputs: list[str]) -> list[str]:
        pick = "mask[0]" if outputs[0] == "mask" else "logits[0].argmax(0)"
        return [f"classes = {pick}  # [H, W] class id per pixel"]
