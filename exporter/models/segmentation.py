"""Semantic segmentation on torchvision's deeplabv3_*, fcn_* and lraspp_* models.

Options: ``output`` = ``logits`` (``[B, C, H, W]`` float) or ``mask`` (``[B, H, W]`` uint8,
argmax in the graph — C times smaller); ``resolution`` = ``input`` (the model's own final
upsampling) or ``stride`` (the classifier's native output, before upsampling: 1/8 for the
dilated ResNets, 1/8–1/16 for MobileNet heads; the caller upsamples).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from exporter.errors import ArchitectureError
from exporter.models.registry import TaskAdapter, register_task
from exporter.models.spec import ModelSpec
from exporter.models.task_options import SEGMENTATION_OPTIONS

MAX_MASK_CLASSES = 256  # a uint8 mask holds class ids 0–255

@functools.cache
def torchvision_segmenters() -> tuple[str, ...]:
    """torchvision segmentation builder names."""
    import torchvision

    return tuple(torchvision.models.list_models(module=torchvision.models.segmentation))


class SegmentationOutputs(nn.Module):
    """``model(x)["out"]`` (or the classifier output before upsampling), as logits or a mask."""

    def __init__(self, model: nn.Module, options: dict[str, Any]) -> None:
        super().__init__()
        self.model = model.eval()
        self.as_mask = options.get("output") == "mask"
        self.native = options.get("resolution") == "stride"

    def forward(self, input: torch.Tensor) -> tuple[torch.Tensor]:  # noqa: A002 - ONNX input name
        if self.native:
            features = self.model.backbone(input)
            lraspp = not hasattr(self.model, "aux_classifier")
            logits = self.model.classifier(features if lraspp else features["out"])
        else:
            logits = self.model(input)["out"]
        if self.as_mask:
            return (logits.argmax(1).to(torch.uint8),)
        return (logits,)


@register_task("segmentation")
class SegmentationTask(TaskAdapter):
    """Image → ``logits [B, C, H, W]`` or ``mask [B, H, W]``."""

    output_names = ("logits",)
    task_options = SEGMENTATION_OPTIONS

    def architectures(self) -> list[str]:
        return list(torchvision_segmenters())

    def outputs(self, options: dict[str, Any]) -> tuple[str, ...]:
        return ("mask",) if options.get("output") == "mask" else ("logits",)

    def build(self, spec: ModelSpec) -> nn.Module:
        import torchvision

        self.check_architecture(spec.architecture)
        if not spec.num_classes or not 2 <= spec.num_classes <= MAX_MASK_CLASSES:
            raise ArchitectureError(f"segmentation needs num_classes between 2 and {MAX_MASK_CLASSES} "
                                    "(background included).", stage="build")
        kwargs: dict[str, Any] = {"weights": None, "weights_backbone": None, "num_classes": spec.num_classes}
        if not spec.architecture.startswith("lraspp"):
            kwargs["aux_loss"] = bool(spec.extra.get("aux_loss", False))
        return torchvision.models.get_model(spec.architecture, **kwargs)

    def wrap(self, model: nn.Module, spec: ModelSpec, options: dict[str, Any] | None = None) -> nn.Module:
        return SegmentationOutputs(model, options or {}).eval()
