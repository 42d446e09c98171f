"""Semantic segmentation: image → ``logits [B, C, H, W]`` or ``mask [B, H, W]`` (torchvision
deeplabv3_*, fcn_*, lraspp_*)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from exporter.errors import ArchitectureError
from exporter.options import OptionSpec
from exporter.tasks import compare
from exporter.tasks.base import Task, TaskTraits
from exporter.tasks.registry import register_task

if TYPE_CHECKING:
    from torch import nn

    from exporter.models.spec import ModelSpec

SEGMENTATION_OPTIONS = (
    OptionSpec("output", "choice", "logits",
               "logits: [B, C, H, W] scores; mask: [B, H, W] uint8 class ids (argmax in the graph).",
               choices=("logits", "mask")),
    OptionSpec("resolution", "choice", "input",
               "input: outputs at the input size; stride: the classifier's native (smaller) output.",
               choices=("input", "stride")),
)


@register_task
class SegmentationTask(Task):
    """Class maps compared by pixel agreement."""

    traits = TaskTraits("segmentation", outputs=("logits",), options=SEGMENTATION_OPTIONS)

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

    def compare(self, pairs: list[compare.Pair], output_names: tuple[str, ...], tolerance: float, n_samples: int,
                settings: dict[str, Any]) -> compare.TaskCheck:
        floor = settings.get("min_agreement") or compare.MIN_PIXEL_AGREEMENT
        return compare.segmentation(pairs, output_names, n_samples, floor)

    def usage_lines(self, model: dict[str, Any], outputs: list[str]) -> list[str]:
        pick = "mask[0]" if outputs[0] == "mask" else "logits[0].argmax(0)"
        return [f"classes = {pick}  # [H, W] class id per pixel"]
