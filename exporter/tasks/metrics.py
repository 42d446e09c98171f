"""Task metrics on a labelled set, computed with maintained libraries (torchmetrics, pycocotools).

Rotated-box AP has no well-kept package: ``rotated_ap`` is VOC-style all-point AP written on the
shared exact rotated IoU (``exporter.geometry``), tested against a case worked by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from exporter.geometry import iou_matrix


@dataclass
class Score:
    """Metrics (primary first), per-class values, and extras the result view draws (confusion matrix)."""

    metrics: dict[str, float]
    per_class: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def _tensor(values: Any, dtype: Any = None):
    import torch

    return torch.as_tensor(np.asarray(values), dtype=dtype)


def classification(logits: np.ndarray, labels: np.ndarray, class_names: list[str]) -> Score:
    """Top-1 (and top-5 with ≥ 5 classes) accuracy, per-class accuracy, confusion matrix."""
    import torch
    from torchmetrics.functional.classification import multiclass_accuracy, multiclass_confusion_matrix

    preds, target = _tensor(logits, torch.float32), _tensor(labels, torch.long)
    classes = preds.shape[1]
    metrics = {"top1_accuracy": float(multiclass_accuracy(preds, target, classes, average="micro"))}
    if classes >= 5:
        metrics["top5_accuracy"] = float(multiclass_accuracy(preds, target, classes, average="micro", top_k=5))
    per_class = multiclass_accuracy(preds, target, classes, average="none").tolist()
    confusion = multiclass_confusion_matrix(preds, target, classes).tolist()
    names = class_names or [str(i) for i in range(classes)]
    return Score(metrics, dict(zip(names, per_class, strict=False)), {"confusion": confusion, "classes": names})


def regression(preds: np.ndarray, targets: np.ndarray, output_names: list[str]) -> Score:
    """MAE (lower is better), RMSE and R² over every output; MAE per output."""
    import torch
    from torchmetrics.functional import mean_absolute_error, mean_squared_error, r2_score

    p, t = _tensor(preds, torch.float32), _tensor(targets, torch.float32)
    metrics = {"mae": float(mean_absolute_error(p, t)), "rmse": float(mean_squared_error(p, t, squared=False)),
               "r2": float(r2_score(p.reshape(len(p), -1), t.reshape(len(t), -1)))}
    per_output = (p - t).abs().mean(0).reshape(-1).tolist()
    names = output_names or [str(i) for i in range(len(per_output))]
    return Score(metrics, dict(zip(names, per_output, strict=False)))


def anomaly(scores: np.ndarray, labels: np.ndarray, threshold: float, maps: np.ndarray | None = None,
            masks: np.ndarray | None = None) -> Score:
    """Image AUROC, F1 at ``threshold``, and pixel AUROC where ground-truth masks exist."""
    import torch
    from torchmetrics.functional.classification import binary_auroc, binary_f1_score

    s, y = _tensor(scores, torch.float32).reshape(-1), _tensor(labels, torch.long).reshape(-1)
    metrics = {"image_auroc": float(binary_auroc(s, y)),
               "f1": float(binary_f1_score((s >= threshold).long(), y))}
    if maps is not None and masks is not None and len(masks):
        metrics["pixel_auroc"] = float(binary_auroc(_tensor(maps, torch.float32).reshape(-1),
                                                    _tensor(masks, torch.long).reshape(-1)))
    return Score(metrics, extra={"threshold": threshold})


def f1_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The score threshold with the best F1 on these labels (the reference model's, applied to both)."""
    order = np.unique(scores)
    best, best_f1 = float(order[0]), -1.0
    for threshold in order:
        predicted = scores >= threshold
        tp = float((predicted & (labels == 1)).sum())
        f1 = 2 * tp / max(1.0, predicted.sum() + (labels == 1).sum())
        if f1 > best_f1:
            best, best_f1 = float(threshold), f1
    return best


def segmentation(pred: np.ndarray, target: np.ndarray, class_names: list[str], ignore_index: int) -> Score:
    """mIoU, pixel accuracy and per-class IoU of class maps ``[N, H, W]``."""
    import torch
    from torchmetrics.functional.classification import multiclass_accuracy, multiclass_jaccard_index

    classes = len(class_names)
    p, t = _tensor(pred, torch.long), _tensor(target, torch.long)
    per_class = multiclass_jaccard_index(p, t, classes, average="none", ignore_index=ignore_index)
    present = torch.isin(torch.arange(classes), t[t != ignore_index].unique())
    metrics = {"miou": float(per_class[present].mean()) if present.any() else 0.0,
               "pixel_accuracy": float(multiclass_accuracy(p, t, classes, average="micro",
                                                           ignore_index=ignore_index))}
    return Score(metrics, {name: float(v) for name, v, ok in zip(class_names, per_class, present, strict=True)
                           if ok})


def coco(preds: list[dict[str, np.ndarray]], targets: list[dict[str, Any]], class_names: list[str],
         with_masks: bool) -> Score:
    """COCO mAP@[.5:.95] and mAP@.5 (bbox, and segm with masks), per-class AP — torchmetrics + pycocotools."""
    import torch
    from torchmetrics.detection import MeanAveragePrecision

    iou_type = ("bbox", "segm") if with_masks else "bbox"
    metric = MeanAveragePrecision(iou_type=iou_type, class_metrics=True, backend="pycocotools")
    to_torch = lambda d: {k: _tensor(v, torch.bool if k == "masks" else None)  # noqa: E731
                          for k, v in d.items() if k in ("boxes", "scores", "labels", "masks")}
    metric.update([to_torch(p) for p in preds], [to_torch(t) for t in targets])
    result = metric.compute()
    prefix = "bbox_" if with_masks else ""
    metrics = {"map": float(result[f"{prefix}map"]), "map_50": float(result[f"{prefix}map_50"])}
    if with_masks:
        metrics = {"mask_map": float(result["segm_map"]), "mask_map_50": float(result["segm_map_50"]),
                   "box_map": metrics["map"], "box_map_50": metrics["map_50"]}
    per_class_key = "segm_map_per_class" if with_masks else "map_per_class"
    classes = result.get("classes")
    per_class = {}
    if classes is not None:
        values = result[per_class_key].reshape(-1).tolist()
        for label, value in zip(classes.reshape(-1).tolist(), values, strict=False):
            name = class_names[label] if 0 <= label < len(class_names) else str(label)
            per_class[name] = max(float(value), 0.0)  # -1 = no ground truth of that class
    return Score(metrics, per_class)


def rotated_ap(preds: list[dict[str, np.ndarray]], targets: list[dict[str, Any]], class_names: list[str],
               iou_threshold: float = 0.5) -> Score:
    """VOC-style AP at ``iou_threshold`` per class for ``(cx, cy, w, h, θ)`` boxes, exact rotated IoU.

    Per class, detections of every image are ranked by score; each is a true positive when it
    overlaps a not-yet-matched ground truth of its class by ≥ ``iou_threshold``. Ground truths
    marked ``difficult`` neither count as misses nor turn their matches into false positives.
    AP is the area under the all-point interpolated precision–recall curve (VOC 2010+).
    """
    per_class = {}
    for label, name in enumerate(class_names):
        ap = _class_ap(preds, targets, label, iou_threshold)
        if ap is not None:
            per_class[name] = ap
    mean = float(np.mean(list(per_class.values()))) if per_class else 0.0
    return Score({"map_50": mean}, per_class)


def _class_ap(preds: list[dict[str, np.ndarray]], targets: list[dict[str, Any]], label: int,
              iou_threshold: float) -> float | None:
    ranked, positives, used = [], 0, {}
    for i, (pred, target) in enumerate(zip(preds, targets, strict=True)):
        mine = target["labels"] == label
        difficult = target.get("difficult", np.zeros(len(target["labels"]), bool))[mine]
        positives += int((~difficult).sum())
        used[i] = (target["boxes"][mine], difficult, np.zeros(int(mine.sum()), bool))
        keep = pred["labels"] == label
        ranked += [(float(s), i, b) for s, b in zip(pred["scores"][keep], pred["boxes"][keep], strict=True)]
    if positives == 0:
        return None
    ranked.sort(key=lambda item: -item[0])
    hits = []
    for _, image, box in ranked:
        gts, difficult, taken = used[image]
        if not len(gts):
            hits.append(0)
            continue
        ious = iou_matrix(np.asarray(box)[None], gts, rotated=True)[0]
        best = int(ious.argmax())
        if ious[best] < iou_threshold:
            hits.append(0)
        elif difficult[best]:
            hits.append(-1)  # ignored
        elif taken[best]:
            hits.append(0)
        else:
            taken[best] = True
            hits.append(1)
    flags = np.array([h for h in hits if h >= 0], dtype=np.float64)
    tp = np.cumsum(flags)
    recall = tp / positives
    precision = tp / np.arange(1, len(flags) + 1)
    return voc_ap(recall, precision)


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the all-point interpolated precision–recall curve."""
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    for i in range(len(p) - 2, -1, -1):
        p[i] = max(p[i], p[i + 1])
    steps = np.nonzero(r[1:] != r[:-1])[0]
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))
