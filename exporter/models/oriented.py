"""Oriented object detection: ``obb_resnet18``, an anchor-free rotated-box detector of our own.

Head (stride 8, one prediction per cell): class logits, centre offset, log width/height and
the angle as ``(sin 2θ, cos 2θ)`` (a rectangle is the same after a half turn, so 2θ is
continuous). Boxes are ``(cx, cy, w, h, θ)`` in input pixels, θ in radians in (-π/2, π/2].

Rotated NMS runs in plain tensor ops, so it exports to any runtime:
- IoU of rotated boxes is ProbIoU (Llerena et al. 2021; Ultralytics' OBB NMS uses it): each
  box as a Gaussian, overlap from the Bhattacharyya distance — differentiable, closed form.
- Greedy suppression is computed as Cluster-NMS (Zheng et al. 2021): starting from the
  candidates sorted by score, ``keep_j = valid_j and no kept i < j overlaps j``, iterated
  ``NMS_ITERATIONS`` times over the upper-triangular IoU matrix. The iteration reaches greedy
  NMS's exact result once it exceeds the longest suppression chain (a box suppressing one that
  would have suppressed another...), which is short in practice; PyTorch and the exported
  graph run the same iterations, so they agree either way.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - torch convention
from torch import nn

from exporter.models.spec import IMAGENET_NORMALIZATION

STRIDE = 8
PRE_NMS_TOPK = 256
NMS_ITERATIONS = 8
DEFAULT_SCORE_THRESHOLD = 0.3
DEFAULT_IOU_THRESHOLD = 0.5


class OrientedDetector(nn.Module):
    """resnet18 to stride 8, then a small anchor-free head; ``forward`` returns raw head maps."""

    def __init__(self, num_classes: int, width: int = 64) -> None:
        super().__init__()
        import torchvision

        base = torchvision.models.resnet18(weights=None)
        self.backbone = nn.Sequential(base.conv1, base.bn1, base.relu, base.maxpool, base.layer1, base.layer2)
        self.neck = nn.Sequential(nn.Conv2d(128, width, 3, padding=1), nn.ReLU())
        self.cls = nn.Conv2d(width, num_classes, 1)
        self.reg = nn.Conv2d(width, 6, 1)  # dx, dy, log w, log h, sin 2θ, cos 2θ
        nn.init.constant_(self.cls.bias, -4.0)  # focal-loss prior: few cells hold an object
        self.register_buffer("mean", torch.tensor(IMAGENET_NORMALIZATION["mean"]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_NORMALIZATION["std"]).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw maps ``cls [B, C, h, w]`` and ``reg [B, 6, h, w]`` of images in [0, 1]."""
        features = self.neck(self.backbone((images - self.mean) / self.std))
        return self.cls(features), self.reg(features)

    @staticmethod
    def decode(reg: torch.Tensor) -> torch.Tensor:
        """Rotated boxes ``[B, h*w, 5]`` (cx, cy, w, h, θ) from the regression map."""
        _, _, h, w = reg.shape
        ys = torch.arange(h, dtype=reg.dtype, device=reg.device).view(1, h, 1).expand(1, h, w)
        xs = torch.arange(w, dtype=reg.dtype, device=reg.device).view(1, 1, w).expand(1, h, w)
        cx = (xs + torch.sigmoid(reg[:, 0])) * STRIDE
        cy = (ys + torch.sigmoid(reg[:, 1])) * STRIDE
        bw = torch.exp(reg[:, 2].clamp(max=6.0)) * STRIDE
        bh = torch.exp(reg[:, 3].clamp(max=6.0)) * STRIDE
        theta = 0.5 * torch.atan2(reg[:, 4], reg[:, 5])
        return torch.stack([cx, cy, bw, bh, theta], dim=-1).flatten(1, 2)


def _covariance(boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Entries (a, b, c) of each box's Gaussian covariance [[a, c], [c, b]]."""
    var_w, var_h = boxes[..., 2] ** 2 / 12, boxes[..., 3] ** 2 / 12
    cos, sin = torch.cos(boxes[..., 4]), torch.sin(boxes[..., 4])
    return var_w * cos**2 + var_h * sin**2, var_w * sin**2 + var_h * cos**2, (var_w - var_h) * cos * sin


def probiou_matrix(boxes: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """ProbIoU ``[B, K, K]`` between all pairs of ``boxes [B, K, 5]``."""
    a, b, c = _covariance(boxes)
    a1, b1, c1 = a[:, :, None], b[:, :, None], c[:, :, None]
    a2, b2, c2 = a[:, None], b[:, None], c[:, None]
    dx = boxes[:, :, None, 0] - boxes[:, None, :, 0]
    dy = boxes[:, :, None, 1] - boxes[:, None, :, 1]
    det = (a1 + a2) * (b1 + b2) - (c1 + c2) ** 2
    t1 = ((a1 + a2) * dy**2 + (b1 + b2) * dx**2) / (det + eps) * 0.25
    t2 = ((c1 + c2) * (-dx) * dy) / (det + eps) * 0.5
    own = (a1 * b1 - c1**2).clamp(min=0) * (a2 * b2 - c2**2).clamp(min=0)
    t3 = torch.log(det / (4 * torch.sqrt(own) + eps) + eps) * 0.5
    distance = (t1 + t2 + t3).clamp(eps, 100.0)
    return 1 - torch.sqrt(1 - torch.exp(-distance) + eps)


def cluster_nms(boxes: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor, iou_threshold: float,
                iterations: int = NMS_ITERATIONS) -> torch.Tensor:
    """Which of the score-sorted candidates ``[B, K]`` survive per-class rotated NMS."""
    same = (labels[:, :, None] == labels[:, None, :]).to(boxes.dtype)
    overlaps = ((probiou_matrix(boxes) * same).triu(diagonal=1) > iou_threshold).to(boxes.dtype)
    keep = valid
    for _ in range(iterations):
        suppressed = (overlaps * keep.to(boxes.dtype)[:, :, None]).amax(dim=1) > 0
        keep = valid & ~suppressed
    return keep


class OrientedOutputs(nn.Module):
    """Raw maps → top-k candidates → rotated NMS → padded ``boxes [B, D, 5]``, scores, labels, count."""

    def __init__(self, model: OrientedDetector, options: dict[str, Any]) -> None:
        super().__init__()
        self.model = model.eval()
        self.max_detections = int(options.get("max_detections") or 100)
        score = options.get("score_threshold")
        iou = options.get("iou_threshold")
        self.score_threshold = DEFAULT_SCORE_THRESHOLD if score is None else float(score)
        self.iou_threshold = DEFAULT_IOU_THRESHOLD if iou is None else float(iou)

    def forward(self, input: torch.Tensor) -> tuple[torch.Tensor, ...]:  # noqa: A002 - ONNX input name
        cls, reg = self.model(input)
        boxes = OrientedDetector.decode(reg)
        scores, labels = torch.sigmoid(cls).flatten(2).max(dim=1)  # [B, N]
        top, index = scores.topk(min(PRE_NMS_TOPK, scores.shape[1]), dim=1)
        boxes = torch.gather(boxes, 1, index[..., None].expand(-1, -1, 5))
        labels = torch.gather(labels, 1, index)
        keep = cluster_nms(boxes, labels, top > self.score_threshold, self.iou_threshold)
        ranked = torch.where(keep, top, torch.full_like(top, -1.0))
        best, order = ranked.topk(min(self.max_detections, ranked.shape[1]), dim=1)
        kept = best > 0
        boxes = torch.gather(boxes, 1, order[..., None].expand(-1, -1, 5)) * kept[..., None]
        labels = torch.where(kept, torch.gather(labels, 1, order), torch.full_like(order, -1))
        count = keep.sum(dim=1).clamp(max=self.max_detections)
        return _pad(boxes, self.max_detections), _pad(best * kept, self.max_detections), \
            _pad(labels, self.max_detections, -1), count


def _pad(values: torch.Tensor, size: int, fill: float = 0) -> torch.Tensor:
    """Pad dim 1 up to ``size`` (when there are fewer candidates than max_detections)."""
    missing = size - values.shape[1]
    if missing <= 0:
        return values
    pad = [0, 0] * (values.dim() - 2) + [0, missing]
    return F.pad(values, pad, value=fill)
