"""The wrappers that put family models into our tasks' output conventions (torch; see ``hf`` and ``smp``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from exporter.models.segmentation import SegmentationOutputs

if TYPE_CHECKING:
    from exporter.models.spec import ModelSpec

DEFAULT_SCORE_THRESHOLD = 0.5  # transformers' post_process_object_detection's own default


class ClassifierOutputs(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.eval()

    def forward(self, input: torch.Tensor) -> tuple[torch.Tensor]:  # noqa: A002 - ONNX input name
        return (self.model(pixel_values=input).logits,)


class SemanticOutputs(SegmentationOutputs):
    """Logits at the input's size (``post_process_semantic_segmentation``'s upsampling), or their argmax mask;
    ``resolution=stride`` keeps the head's own resolution."""

    def forward(self, input: torch.Tensor) -> tuple[torch.Tensor]:  # noqa: A002 - ONNX input name
        logits = self.model(pixel_values=input).logits
        if not self.native and tuple(logits.shape[-2:]) != tuple(input.shape[-2:]):
            logits = nn.functional.interpolate(logits, size=input.shape[-2:], mode="bilinear", align_corners=False)
        return (logits.argmax(1).to(torch.uint8),) if self.as_mask else (logits,)


class DetrOutputs(nn.Module):
    """Images in [0, 1] → the processor's post-processing, padded: ``boxes [B, D, 4]`` (x1, y1, x2, y2 in input
    pixels), ``scores [B, D]``, ``labels [B, D]`` (int64, -1 in empty slots), ``num_detections [B]``, best first."""

    def __init__(self, model: nn.Module, spec: ModelSpec, options: dict[str, Any], softmax: bool,
                 mean: list[float] | None, std: list[float] | None) -> None:
        super().__init__()
        self.model = model.eval()
        self.softmax = softmax
        self.max_detections = int(options.get("max_detections") or 100)
        threshold = options.get("score_threshold")
        self.threshold = DEFAULT_SCORE_THRESHOLD if threshold is None else float(threshold)
        channels, height, width = spec.input_size
        self.register_buffer("mean", torch.tensor(mean or [0.0] * channels).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std or [1.0] * channels).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([width, height, width, height], dtype=torch.float32),
                             persistent=False)

    def forward(self, input: torch.Tensor) -> tuple[torch.Tensor, ...]:  # noqa: A002 - ONNX input name
        out = self.model(pixel_values=(input - self.mean.to(input.dtype)) / self.std.to(input.dtype))
        logits, centres = out.logits, out.pred_boxes
        queries, classes = logits.shape[1], logits.shape[2]
        if self.softmax:
            scores, labels = logits.softmax(-1)[..., :-1].max(-1)
            scores, index = scores.topk(min(self.max_detections, queries), dim=1)
            labels = labels.gather(1, index)
        else:
            scores, index = logits.sigmoid().flatten(1).topk(min(self.max_detections, queries * classes), dim=1)
            labels, index = index % classes, torch.div(index, classes, rounding_mode="floor")
        cx, cy, w, h = centres.gather(1, index.unsqueeze(-1).expand(-1, -1, 4)).unbind(-1)
        boxes = torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], -1) * self.scale.to(input.dtype)
        kept = scores > self.threshold
        count = kept.sum(1)
        boxes, scores = boxes * kept.unsqueeze(-1), scores * kept
        labels = torch.where(kept, labels, torch.full_like(labels, -1))
        pad = self.max_detections - scores.shape[1]
        if pad > 0:  # fewer queries than max_detections
            boxes = nn.functional.pad(boxes, (0, 0, 0, pad))
            scores, labels = nn.functional.pad(scores, (0, pad)), nn.functional.pad(labels, (0, pad), value=-1)
        return boxes, scores, labels.to(torch.int64), count.to(torch.int64)


class SmpOutputs(SegmentationOutputs):
    """Logits ``[B, C, H, W]`` at the input's size (one-logit models: ``[0, logit]``), or their argmax mask."""

    def forward(self, input: torch.Tensor) -> tuple[torch.Tensor]:  # noqa: A002 - ONNX input name
        logits = self.model(input)
        if isinstance(logits, (tuple, list)):  # aux_params: (mask logits, image labels)
            logits = logits[0]
        if logits.shape[1] == 1:
            logits = torch.cat([torch.zeros_like(logits), logits], 1)
        return (logits.argmax(1).to(torch.uint8),) if self.as_mask else (logits,)


class AnomalibOutputs(nn.Module):
    """anomalib's module end to end (pre-processor, model, post-processor) → ``anomaly_map [N, 1, H', W']``,
    ``score [N]``, normalised as its predictions are."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.eval()

    def forward(self, input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: A002 - ONNX input name
        out = self.model(input)
        return out.anomaly_map, out.pred_score.reshape(-1)
