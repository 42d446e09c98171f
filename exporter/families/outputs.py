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


MASK2FORMER_SIZE = (384, 384)  # its processors' post-processing upsamples the query masks to this size first


class UniversalSemanticOutputs(SegmentationOutputs):
    """Mask2Former's ``post_process_semantic_segmentation``: each class's score map is the sum over queries of the
    query's class probability (softmax without "no object") times its mask's sigmoid, the masks first upsampled to
    the processor's 384×384 and the scores then to the input (its ``target_sizes``); or their argmax mask.
    ``resolution=stride`` keeps the masks' own resolution (a quarter of the input)."""

    def forward(self, input: torch.Tensor) -> tuple[torch.Tensor]:  # noqa: A002 - ONNX input name
        out = self.model(pixel_values=input)
        masks = out.masks_queries_logits
        if not self.native:
            masks = nn.functional.interpolate(masks, size=MASK2FORMER_SIZE, mode="bilinear", align_corners=False)
        classes = out.class_queries_logits.softmax(-1)[..., :-1]
        scores = torch.einsum("bqc,bqhw->bchw", classes, masks.sigmoid())
        if not self.native:
            scores = nn.functional.interpolate(scores, size=input.shape[-2:], mode="bilinear", align_corners=False)
        return (scores.argmax(1).to(torch.uint8),) if self.as_mask else (scores,)


class UniversalInstanceOutputs(nn.Module):
    """Mask2Former's ``post_process_instance_segmentation``, padded as our instance segmentation: the best
    ``num_queries`` (query, class) pairs by class probability, each query's mask (at 384×384) binarised at logit 0
    and scored by its mean probability inside, score = class probability × mask score; kept when at or above
    ``score_threshold`` with a non-empty mask at the input size (nearest). Outputs ``boxes`` (the masks' extents,
    in input pixels), ``scores``, ``labels``, ``num_detections``, ``masks [B, D, H, W]`` (uint8, or the
    probabilities with ``masks=probability``), best first. A ``mask_threshold`` other than the processor's 0.5
    binarises the masks returned (not the scoring, which is the processor's)."""

    def __init__(self, model: nn.Module, options: dict[str, Any]) -> None:
        super().__init__()
        self.model = model.eval()
        self.max_detections = int(options.get("max_detections") or 100)
        threshold, mask_threshold = options.get("score_threshold"), options.get("mask_threshold")
        self.threshold = DEFAULT_SCORE_THRESHOLD if threshold is None else float(threshold)
        self.mask_threshold = 0.5 if mask_threshold is None else float(mask_threshold)
        self.probability = options.get("masks") == "probability"

    def forward(self, input: torch.Tensor) -> tuple[torch.Tensor, ...]:  # noqa: A002 - ONNX input name
        out = self.model(pixel_values=input)
        logits = nn.functional.interpolate(out.masks_queries_logits, size=MASK2FORMER_SIZE, mode="bilinear",
                                           align_corners=False)
        probabilities = out.class_queries_logits.softmax(-1)[..., :-1]
        queries, classes = probabilities.shape[1], probabilities.shape[2]
        scores, index = probabilities.flatten(1).topk(queries, dim=1)
        labels, query = index % classes, torch.div(index, classes, rounding_mode="floor")
        logits = logits.gather(1, query[:, :, None, None].expand(-1, -1, *logits.shape[-2:]))
        inside = (logits > 0).to(logits.dtype)
        scores = scores * (logits.sigmoid() * inside).flatten(2).sum(2) / (inside.flatten(2).sum(2) + 1e-6)
        if self.mask_threshold != 0.5:
            inside = (logits.sigmoid() >= self.mask_threshold).to(logits.dtype)
        binary = nn.functional.interpolate(inside, size=input.shape[-2:], mode="nearest")
        kept = (scores >= self.threshold) & (binary.flatten(2).amax(2) > 0)
        scores, order = torch.where(kept, scores, -1.0).topk(min(self.max_detections, queries), dim=1)
        kept, labels = scores >= 0, labels.gather(1, order)
        pick = order[:, :, None, None].expand(-1, -1, *binary.shape[-2:])
        binary = binary.gather(1, pick) * kept[:, :, None, None]
        boxes = _mask_extents(binary)
        masks = binary
        if self.probability:
            probability = nn.functional.interpolate(logits.sigmoid(), size=input.shape[-2:], mode="bilinear",
                                                    align_corners=False)
            masks = probability.gather(1, pick) * kept[:, :, None, None]
        scores, labels = scores.clamp(min=0), torch.where(kept, labels, torch.full_like(labels, -1))
        pad = self.max_detections - scores.shape[1]
        if pad > 0:  # fewer queries than max_detections
            boxes, masks = nn.functional.pad(boxes, (0, 0, 0, pad)), nn.functional.pad(masks, (0, 0, 0, 0, 0, pad))
            scores, labels = nn.functional.pad(scores, (0, pad)), nn.functional.pad(labels, (0, pad), value=-1)
        masks = masks if self.probability else masks.to(torch.uint8)
        return boxes, scores, labels.to(torch.int64), kept.sum(1).to(torch.int64), masks


def _mask_extents(masks: torch.Tensor) -> torch.Tensor:
    """``[B, D, 4]`` boxes (x1, y1, x2, y2, pixel edges) around each binary mask ``[B, D, H, W]``; zeros if empty."""
    height, width = masks.shape[-2:]
    extents = []
    for axis, size in ((-2, width), (-1, height)):  # columns that hold a pixel (x), rows that do (y)
        present = masks.amax(dim=axis) > 0
        positions = torch.arange(size, device=masks.device, dtype=masks.dtype)
        low = torch.where(present, positions, torch.full_like(positions, float(size))).amin(-1)
        high = torch.where(present, positions + 1, torch.zeros_like(positions)).amax(-1)
        extents.append((low.clamp(max=high), high))
    (x1, x2), (y1, y2) = extents
    return torch.stack([x1, y1, x2, y2], -1)


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
        picked = centres.gather(1, index.unsqueeze(-1).expand(-1, -1, 4))  # (cx, cy, w, h)
        centre, size = picked[..., :2], picked[..., 2:]  # slices, not unbind: Core ML cannot unbind a dynamic batch
        boxes = torch.cat([centre - 0.5 * size, centre + 0.5 * size], -1) * self.scale.to(input.dtype)
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
        # Lightning's own switch for TorchScript (its ``to_torchscript`` sets it): ``trainer`` reads None instead of
        # raising "not attached to a `Trainer`" when torch.jit.trace (TorchScript, ncnn, Core ML) walks the module.
        self.model._jit_is_scripting = True
        _resolve_thresholds(getattr(model, "post_processor", None))

    def forward(self, input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: A002 - ONNX input name
        out = self.model(input)
        return out.anomaly_map, out.pred_score.reshape(-1)


def _resolve_thresholds(post: nn.Module | None) -> None:
    """Store the thresholds anomalib's post-processor uses in place of the NaN it keeps for one never computed (a
    model fitted without masks has no pixel threshold; the image threshold stands in): its ``image_threshold`` and
    ``pixel_threshold`` read the same values after, so the outputs are unchanged — and Core ML's converter, which
    compares each traced constant with the state dict by ``torch.equal`` (NaN ≠ NaN), takes the module."""
    if post is None or not hasattr(post, "_pixel_threshold") or not hasattr(post, "_image_threshold"):
        return
    with torch.no_grad():
        image, pixel = post.image_threshold.clone(), post.pixel_threshold.clone()  # both from the stored values
        post._image_threshold.copy_(image)
        post._pixel_threshold.copy_(pixel)


class ContractOutputs(nn.Module):
    """A user's own model or a code-free program put into the task's output convention.

    - classification / regression: the one tensor it returns (``[N, classes]`` / ``[N, outputs]``), or the first of
      a tuple, or ``logits`` of a dict;
    - segmentation: logits ``[N, C, H, W]`` (a tensor, the first of a tuple, or ``out`` of a dict; one logit becomes
      ``[0, logit]``), or their argmax mask with ``output=mask``;
    - object_detection: our padded convention as it is (``boxes [N, D, 4]``, ``scores [N, D]``, ``labels [N, D]``
      and optionally ``num_detections [N]``), torchvision's per-image ``{"boxes", "scores", "labels"}`` dicts, or
      one ``[N, D, 6]`` tensor of x1, y1, x2, y2, score, class (an end-to-end YOLO export), padded or cut here to
      ``max_detections`` (labels -1 in empty slots).
    """

    def __init__(self, model: nn.Module, task: str, options: dict[str, Any]) -> None:
        super().__init__()
        self.model = model
        self.task = task
        self.as_mask = options.get("output") == "mask"
        self.max_detections = int(options.get("max_detections") or 100)

    def forward(self, input: torch.Tensor) -> tuple[torch.Tensor, ...]:  # noqa: A002 - ONNX input name
        out = self.model(input)
        if self.task == "object_detection":
            return _padded(out, self.max_detections)
        key = "out" if self.task == "segmentation" else "logits"
        tensor = out[key] if isinstance(out, dict) else out[0] if isinstance(out, (tuple, list)) else out
        if self.task == "segmentation":
            if tensor.shape[1] == 1:
                tensor = torch.cat([torch.zeros_like(tensor), tensor], 1)
            return (tensor.argmax(1).to(torch.uint8),) if self.as_mask else (tensor,)
        return (tensor,)


def _padded(out: Any, limit: int) -> tuple[torch.Tensor, ...]:
    if isinstance(out, (tuple, list)) and len(out) == 1:
        out = out[0]
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], dict):  # torchvision: a dict per image
        rows = [_pad_image(d["boxes"], d["scores"], d["labels"], limit) for d in out]
        boxes, scores, labels = (torch.stack([row[i] for row in rows]) for i in range(3))
    elif isinstance(out, torch.Tensor):  # [N, D, 6]: x1, y1, x2, y2, score, class (end-to-end YOLO exports)
        boxes, scores = out[..., :4], out[..., 4]
        labels = torch.where(scores > 0, out[..., 5].to(torch.int64), torch.full_like(scores, -1, dtype=torch.int64))
        return _padded((boxes, scores, labels), limit)
    else:
        boxes, scores, labels = out[0], out[1], out[2].to(torch.int64)
        n = boxes.shape[0]  # padded to at least `limit` slots, then cut to `limit` (no data-dependent size)
        boxes = torch.cat([boxes, boxes.new_zeros(n, limit, 4)], 1)[:, :limit]
        scores = torch.cat([scores, scores.new_zeros(n, limit)], 1)[:, :limit]
        labels = torch.cat([labels, labels.new_full((n, limit), -1)], 1)[:, :limit]
        if len(out) > 3:  # its own count of the filled slots
            return boxes, scores, labels, out[3].to(torch.int64).clamp(max=limit)
    return boxes, scores, labels, (labels >= 0).sum(1).to(torch.int64)


def _pad_image(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor,
               limit: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One image's detections cut or padded to ``limit`` without a data-dependent output size: concatenated
    with ``limit`` empty slots, then the first ``limit`` kept."""
    return (torch.cat([boxes[:limit], boxes.new_zeros(limit, 4)])[:limit],
            torch.cat([scores[:limit], scores.new_zeros(limit)])[:limit],
            torch.cat([labels[:limit].to(torch.int64), labels.new_full((limit,), -1, dtype=torch.int64)])[:limit])


def check_contract(outputs: tuple[torch.Tensor, ...], task: str, num_classes: int | None,
                   input_size: tuple[int, int, int]) -> str:
    """What is wrong with a wrapped model's outputs on one ``input_size`` image ("" when they keep the task's
    contract), saying what was expected."""
    expected = {
        "classification": f"logits [1, {num_classes}] (one score per class)",
        "regression": "predictions [1, K]",
        "segmentation": f"logits [1, {num_classes}, H, W] (or a dict with 'out', as torchvision returns)",
        "object_detection": "boxes [1, D, 4], scores [1, D], labels [1, D] (+ num_detections [1]), or a list of "
                            "{'boxes', 'scores', 'labels'} per image as torchvision returns them",
    }[task]
    shapes = [tuple(t.shape) for t in outputs]
    wrong = False
    if task in ("classification", "regression"):
        wrong = len(shapes) != 1 or len(shapes[0]) != 2 or (task == "classification" and num_classes is not None
                                                              and shapes[0][1] != num_classes)
    elif task == "segmentation":
        wrong = (len(shapes) != 1 or len(shapes[0]) not in (3, 4)
                 or (len(shapes[0]) == 4 and num_classes is not None and shapes[0][1] != num_classes))
    else:
        wrong = (len(shapes) != 4 or len(shapes[0]) != 3 or shapes[0][2] != 4 or shapes[1] != shapes[0][:2]
                 or shapes[2] != shapes[0][:2] or not outputs[1].is_floating_point())
    if wrong or any(s[:1] != (1,) for s in shapes):
        return f"expected {expected}; it returned {', '.join(str(list(s)) for s in shapes) or 'nothing'}"
    return ""
