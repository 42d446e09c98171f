"""Batched, exportable post-processing: greedy NMS per (image, label) into padded outputs.

Every detector here ends in the same fixed-rank outputs, for any batch size:
``boxes [B, D, 4]`` (x1, y1, x2, y2 in input pixels), ``scores [B, D]``, ``labels [B, D]``
(-1 in empty slots) and ``num_detections [B]`` — the convention of TensorRT's EfficientNMS
plugin and Ultralytics' ``nms=True`` exports. Candidates arrive as one flat list with an
image index per row, so no Python loop over images is traced (docs/findings.md: traced per-image
loops fix the batch at one).
"""

from __future__ import annotations

import torch


def flat_candidates(valid: torch.Tensor, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Rows of ``[B, M, ...]`` tensors where ``valid [B, M]`` holds, plus their image index."""
    batch, index = torch.where(valid)
    return (batch, *(t[batch, index] for t in tensors))


def grouped_nms(boxes: torch.Tensor, scores: torch.Tensor, batch: torch.Tensor, labels: torch.Tensor,
                iou_threshold: float, image_size: tuple[int, int]) -> torch.Tensor:
    """Indices kept by greedy NMS run separately per (image, label), by decreasing score.

    The groups are separated by shifting boxes: x by image, y by label (a 2-D variant of
    torchvision's coordinate trick, which keeps offsets — and float32 rounding — small).
    Boxes must lie inside ``image_size`` (they are clipped before this).
    """
    import torchvision

    height, width = image_size
    shift = torch.stack([batch * (width + 1), labels * (height + 1)], dim=1).to(boxes.dtype)
    return torchvision.ops.nms(boxes + shift.repeat(1, 2), scores, iou_threshold)


def padded_detections(keep: torch.Tensor, batch: torch.Tensor, images: torch.Tensor,
                      max_detections: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Place NMS survivors (sorted by score) into per-image slots.

    Returns:
        ``(kept, slot, count)``: indices of the rows that fit (best ``max_detections`` per
        image), their flat slot ``image * max_detections + rank`` and the count per image.
    """
    image = batch[keep]
    onehot = (image[:, None] == image_indices(images)[None]).to(torch.int64)
    rank = (onehot.cumsum(0) * onehot).sum(1) - 1
    fits = rank < max_detections
    count = onehot.sum(0).clamp(max=max_detections)
    return keep[fits], image[fits] * max_detections + rank[fits], count


def image_indices(images: torch.Tensor) -> torch.Tensor:
    """``[0, 1, ..., B-1]`` built from a ``[B, ...]`` tensor with ops, so B stays dynamic in a trace."""
    return torch.ones_like(images.reshape(images.shape[0], -1)[:, 0], dtype=torch.int64).cumsum(0) - 1


def scatter_rows(values: torch.Tensor, slot: torch.Tensor, images: torch.Tensor,
                 max_detections: int, fill: float = 0) -> torch.Tensor:
    """``values [K, ...]`` written into ``[B, max_detections, ...]`` at ``slot``, ``fill`` elsewhere.

    The padded tensor is expanded from ``images`` (not built from a Python batch size) so that
    the batch axis stays dynamic in a traced graph.
    """
    trailing = tuple(values.shape[1:])
    first = images.reshape(images.shape[0], -1)[:, :1].to(values.dtype)
    template = first.reshape(-1, 1, *([1] * len(trailing))).expand(-1, max_detections, *trailing)
    out = torch.full_like(template, fill).reshape(-1, *trailing)
    out = out.index_put((slot,), values)
    return out.reshape(-1, max_detections, *trailing)


def nms_padded(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, batch: torch.Tensor,
               images: torch.Tensor, iou_threshold: float, max_detections: int,
               image_size: tuple[int, int]) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Greedy NMS per (image, label) on flat candidates, then padded per-image outputs.

    Returns:
        ``(outputs, kept, slot)``: the padded ``boxes/scores/labels/num_detections`` and, for
        heads that add per-detection tensors (masks), which candidate fills which slot.
    """
    keep = grouped_nms(boxes, scores, batch, labels, iou_threshold, image_size)
    kept, slot, count = padded_detections(keep, batch, images, max_detections)
    outputs = {
        "boxes": scatter_rows(boxes[kept], slot, images, max_detections),
        "scores": scatter_rows(scores[kept], slot, images, max_detections),
        "labels": scatter_rows(labels[kept].to(torch.int64), slot, images, max_detections, fill=-1),
        "num_detections": count,
    }
    return outputs, kept, slot
