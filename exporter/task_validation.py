"""Task-aware comparison of PyTorch and exported outputs, on top of raw tensor diffs.

- Detection (axis-aligned, oriented, instance): position-wise diffs of padded outputs are
  meaningless when scores tie (FINDINGS.md), so detections are matched per image — same
  label, IoU ≥ ``MATCH_IOU`` (exact rotated-rectangle IoU for oriented boxes), greedily from
  the best overlap — and box/score diffs are measured on matched pairs. Every detection must
  be matched, except *borderline* ones: a score within the score tolerance of the threshold
  or of the ``max_detections`` cut, where a 1e-5 difference legitimately decides membership.
  Instance masks are compared by IoU per matched pair.
- Segmentation: pixel agreement of class masks (argmax of logits, or the mask output).
A model that detects nothing (or segments only background) on the project's sample images
makes the verdict ``inconclusive``: an empty comparison proves nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MATCH_IOU = 0.5
MIN_MASK_IOU = 0.95  # per matched instance; FINDINGS: ~1e-5 of mask pixels flip at fp32
MASK_UNION_FLOOR = 100
BORDERLINE_MARGIN = 0.01  # widest score gap to the threshold/cut that still counts as borderline
MIN_MATCH_RATE = 0.99  # share of PyTorch detections that must be matched (the rest borderline)
MIN_PIXEL_AGREEMENT = 0.999
DETECTION_TASKS = ("object_detection", "instance_segmentation", "oriented_object_detection")
# Detection scores pass through softmax/sigmoid after thousands of ops; FINDINGS measured
# 2e-4 between ORT and eager, so default tolerances are scaled up for these tasks.
TOLERANCE_FACTOR = {task: 10.0 for task in DETECTION_TASKS}

Pair = tuple[list[int], list[np.ndarray], list[np.ndarray]]  # pool indices, reference, exported


@dataclass
class TaskCheck:
    """Rows for the comparison table, task metrics, hard problems and why it proves nothing."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    inconclusive: str | None = None


def check(task: str, pairs: list[Pair], output_names: tuple[str, ...], tolerance: float,
          n_samples: int, settings: dict[str, Any]) -> TaskCheck | None:
    """The task's own comparison, or ``None`` for tasks compared tensor by tensor."""
    if task in DETECTION_TASKS:
        return _detections(pairs, output_names, tolerance, n_samples, settings,
                           rotated=task == "oriented_object_detection")
    if task == "segmentation":
        return _segmentation(pairs, output_names, n_samples, settings.get("min_agreement") or MIN_PIXEL_AGREEMENT)
    return None


# -- detection ---------------------------------------------------------------------------
def _detections(pairs: list[Pair], names: tuple[str, ...], tolerance: float, n_samples: int,
                settings: dict[str, Any], rotated: bool) -> TaskCheck:
    result = TaskCheck()
    box_diffs, score_diffs, mask_misses, count_diffs = [], [], [], []
    tally = {"matched": 0, "unmatched_reference": 0, "unmatched_exported": 0, "borderline": 0,
             "reference_detections": 0, "sample_detections": 0}
    score_allowed = tolerance
    box_peak = max((float(np.abs(refs[0]).max()) for _, refs, _ in pairs), default=1.0)
    box_allowed = tolerance * max(1.0, box_peak)
    for indices, reference, exported in pairs:
        ref, out = dict(zip(names, reference, strict=True)), dict(zip(names, exported, strict=True))
        for row, image in enumerate(indices):
            r, c = _image_detections(ref, row), _image_detections(out, row)
            tally["reference_detections"] += len(r["scores"])
            if image < n_samples:
                tally["sample_detections"] += len(r["scores"])
            count_diffs.append(abs(len(r["scores"]) - len(c["scores"])))
            matches = _match(r, c, rotated, close=box_allowed)
            tally["matched"] += len(matches)
            for i, j in matches:
                box_diffs.append(_box_diff(r["boxes"][i], c["boxes"][j], rotated))
                score_diffs.append(abs(float(r["scores"][i]) - float(c["scores"][j])))
                if "masks" in r:
                    mask_misses.append(_mask_miss(r["masks"][i], c["masks"][j], settings))
            for side, det in (("reference", r), ("exported", c)):
                paired = {m[0] if side == "reference" else m[1] for m in matches}
                for k in range(len(det["scores"])):
                    if k in paired:
                        continue
                    margin = min(2 * score_allowed, BORDERLINE_MARGIN)
                    if _borderline(float(det["scores"][k]), det["scores"], settings, margin):
                        tally["borderline"] += 1
                    else:
                        tally[f"unmatched_{side}"] += 1
    result.rows = [
        _row("boxes", box_diffs, box_allowed, "matched pairs; |Δ| of coordinates"
             + (" and angle (radians, modulo π)" if rotated else "")),
        _row("scores", score_diffs, score_allowed, "matched pairs"),
    ]
    if mask_misses:
        note = f"1 − mask IoU per matched pair (union ≥ {MASK_UNION_FLOOR} px)"
        result.rows.append(_row("masks", mask_misses, 1 - MIN_MASK_IOU, note))
    unmatched = tally["unmatched_reference"] + tally["unmatched_exported"]
    total = tally["reference_detections"]
    result.metrics = {**{k: float(v) for k, v in tally.items()},
                      "max_count_difference": float(max(count_diffs, default=0))}
    if total:
        result.metrics["match_rate"] = tally["matched"] / total
    if mask_misses:
        result.metrics["min_mask_iou"] = 1 - max(mask_misses)
    if unmatched:
        result.messages.append(
            f"{tally['unmatched_reference']} PyTorch and {tally['unmatched_exported']} exported detections "
            f"have no counterpart (same label, IoU ≥ {MATCH_IOU})")
    floor = settings.get("min_agreement") or MIN_MATCH_RATE
    if total and result.metrics["match_rate"] < floor:
        result.messages.append(
            f"only {result.metrics['match_rate']:.1%} of PyTorch's detections are matched (need {floor:.0%}); "
            f"{tally['borderline']} sit at the score threshold or the max_detections cut")
    seen = tally["sample_detections"] if n_samples else total
    if seen == 0:
        where = "the project's sample images" if n_samples else "the validation inputs"
        result.inconclusive = (f"the model detects nothing on {where} at score_threshold "
                               f"{settings.get('score_threshold')}, so there is nothing to compare; lower the "
                               "threshold or add sample images with objects")
    return result


def _image_detections(outputs: dict[str, np.ndarray], row: int) -> dict[str, np.ndarray]:
    count = int(outputs["num_detections"][row])
    det = {key: outputs[key][row][:count] for key in ("boxes", "scores", "labels")}
    if "masks" in outputs:
        det["masks"] = outputs["masks"][row][:count]
    return det


def _match(ref: dict[str, np.ndarray], out: dict[str, np.ndarray], rotated: bool,
           close: float = 0.0) -> list[tuple[int, int]]:
    """Greedy one-to-one matching by IoU (same label, IoU ≥ MATCH_IOU), best overlaps first.

    Boxes whose coordinates all agree within ``close`` match too: a sliver 0.1 px wide has a low
    IoU with itself shifted by 0.04 px.
    """
    if not len(ref["scores"]) or not len(out["scores"]):
        return []
    iou = _iou_matrix(ref["boxes"], out["boxes"], rotated)
    if close > 0:
        near = np.abs(ref["boxes"][:, None].astype(np.float64) - out["boxes"][None].astype(np.float64)).max(-1)
        iou = np.where(near <= close, np.maximum(iou, 1.0 - near / (close * 1e3)), iou)
    iou[ref["labels"][:, None] != out["labels"][None, :]] = 0.0
    matches, used_r, used_c = [], set(), set()
    for flat in np.argsort(-iou, axis=None):
        i, j = divmod(int(flat), iou.shape[1])
        if iou[i, j] < MATCH_IOU:
            break
        if i not in used_r and j not in used_c:
            matches.append((i, j))
            used_r.add(i)
            used_c.add(j)
    return matches


def _iou_matrix(a: np.ndarray, b: np.ndarray, rotated: bool) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    if not rotated:
        lt = np.maximum(a[:, None, :2], b[None, :, :2])
        rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
        inter = np.clip(rb - lt, 0, None).prod(-1)
        area = lambda x: np.clip(x[:, 2] - x[:, 0], 0, None) * np.clip(x[:, 3] - x[:, 1], 0, None)
        union = area(a)[:, None] + area(b)[None, :] - inter
        # Zero-area boxes (random or barely trained heads emit them) have no IoU: equal is a match.
        same = np.abs(a[:, None] - b[None, :]).max(-1) <= 1e-3 * np.maximum(1.0, np.abs(a).max(-1))[:, None]
        return np.where(union > 1e-9, inter / np.maximum(union, 1e-12), same.astype(np.float64))
    from exporter.models.oriented import rotated_iou

    reach = np.hypot(a[:, None, 2] + b[None, :, 2], a[:, None, 3] + b[None, :, 3]) / 2
    near = np.hypot(a[:, None, 0] - b[None, :, 0], a[:, None, 1] - b[None, :, 1]) < reach
    iou = np.zeros((len(a), len(b)))
    for i, j in zip(*np.nonzero(near), strict=True):
        iou[i, j] = rotated_iou(a[i], b[j])
    return iou


def _box_diff(a: np.ndarray, b: np.ndarray, rotated: bool) -> float:
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    if rotated:  # θ and θ ± π are the same rectangle
        diff[4] = abs((float(a[4]) - float(b[4]) + math.pi / 2) % math.pi - math.pi / 2)
    return float(diff.max())


def _mask_miss(a: np.ndarray, b: np.ndarray, settings: dict[str, Any]) -> float:
    """1 − IoU of two instance masks, the union floored at ``MASK_UNION_FLOOR`` pixels so that one
    flipped boundary pixel of a 5-pixel sliver does not count as a 20 % miss."""
    if settings.get("masks") == "probability":
        threshold = float(settings.get("mask_threshold", 0.5))
        a, b = a >= threshold, b >= threshold
    a, b = a.astype(bool), b.astype(bool)
    return float(np.logical_xor(a, b).sum() / max(np.logical_or(a, b).sum(), MASK_UNION_FLOOR))


def _borderline(score: float, scores: np.ndarray, settings: dict[str, Any], margin: float) -> bool:
    """A detection whose presence a tiny score difference decides: at the threshold or the cut."""
    threshold = settings.get("score_threshold")
    near_threshold = threshold is not None and score - float(threshold) <= margin
    at_cut = len(scores) >= int(settings.get("max_detections") or 0) and score - float(scores.min()) <= margin
    return near_threshold or at_cut


# -- segmentation ------------------------------------------------------------------------
def _segmentation(pairs: list[Pair], names: tuple[str, ...], n_samples: int, floor: float) -> TaskCheck:
    result = TaskCheck()
    agree = total = foreground = 0
    for indices, reference, exported in pairs:
        ref, out = _class_map(reference[0]), _class_map(exported[0])
        agree += int((ref == out).sum())
        total += ref.size
        on_samples = [row for row, image in enumerate(indices) if image < n_samples] if n_samples else list(
            range(len(indices)))
        foreground += int((ref[on_samples] != 0).sum())
    agreement = agree / total if total else 0.0
    result.metrics = {"pixel_agreement": agreement}
    if names[0] == "mask":  # class ids: compared by agreement, not by value
        result.rows = [_row("mask", [1 - agreement], 1 - floor, "fraction of pixels whose class differs")]
    elif agreement < floor:
        result.messages.append(f"pixel agreement {agreement:.5f} is below {floor}")
    if total and foreground == 0:
        result.inconclusive = ("the model predicts only background (class 0) on the sample images, so the "
                               "masks prove nothing; check the model or add sample images with objects")
    return result


def _class_map(values: np.ndarray) -> np.ndarray:
    return values.argmax(1) if values.ndim == 4 else values.astype(np.int64)


def _row(name: str, diffs: list[float], allowed: float, note: str) -> dict[str, Any]:
    values = np.asarray(diffs, dtype=np.float64)
    return {"name": name, "diffs": values, "allowed": allowed, "note": note}
