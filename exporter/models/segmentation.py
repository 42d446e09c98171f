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
