"""Comparisons of PyTorch and exported outputs that tasks use on top of raw tensor diffs.

- Detection (axis-aligned, oriented, instance): position-wise diffs of padded outputs are
  meaningless when scores tie (docs/findings.md), so detections are matched per image — same
  label, IoU ≥ ``MATCH_IOU`` (exact rotated-rectangle IoU for oriented boxes), greedily from
  the best overlap — and box/score diffs are measured on matched pairs. At full precision every
  detection must be matched, except *borderline* ones: a score within the score tolerance of the
  threshold or of the ``max_detections`` cut, where a 1e-5 difference legitimately decides
  membership. At reduced precision ≥ 99 % of PyTorch's detections must be matched (task agreement,
  as for every task); what went unmatched is listed as evidence.
  Instance masks are compared by IoU per matched pair.
- Segmentation: pixel agreement of class masks (argmax of logits, or the mask output). At full precision a pixel
  whose two best class scores are within the allowed difference of each other is a *near tie*: a file within
  tolerance may legitimately pick either, so it agrees when the class it picks scores within that difference of
  PyTorch's best (e.g. the ~0 scores Mask2Former sums where no query's mask reaches: 1e-13 apart).
A model that detects nothing (or segments only background) on the project's sample images
makes the verdict ``inconclusive``: an empty comparison proves nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from exporter.geometry import iou_matrix

MATCH_IOU = 0.5
MIN_MASK_IOU = 0.95  # per matched instance; FINDINGS: ~1e-5 of mask pixels flip at fp32
MASK_UNION_FLOOR = 100
BORDERLINE_MARGIN = 0.01  # widest score gap to the threshold/cut that still counts as borderline
MIN_MATCH_RATE = 0.99  # share of PyTorch detections that must be matched (the rest borderline)
MIN_PIXEL_AGREEMENT = 0.999

Pair = tuple[list[int], list[np.ndarray], list[np.ndarray]]  # pool indices, reference, exported


@dataclass
class TaskCheck:
    """Rows for the comparison table, task metrics, hard problems and why it proves nothing."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    inconclusive: str | None = None
    notes: list[str] = field(default_factory=list)  # evidence that does not decide (added after the verdict)


# -- detection ---------------------------------------------------------------------------
def detections(pairs: list[Pair], names: tuple[str, ...], tolerance: float, n_samples: int,
               settings: dict[str, Any], rotated: bool) -> TaskCheck:
    """Padded detection outputs matched per image (see the module docstring)."""
    box_peak = max((float(np.abs(refs[0]).max()) for _, refs, _ in pairs), default=1.0)
    tally = _Tally(box_allowed=tolerance * max(1.0, box_peak), margin=min(2 * tolerance, BORDERLINE_MARGIN),
                   rotated=rotated, settings=settings)
    for indices, reference, exported in pairs:
        ref, out = dict(zip(names, reference, strict=True)), dict(zip(names, exported, strict=True))
        for row, image in enumerate(indices):
            tally.add(_image_detections(ref, row), _image_detections(out, row), on_sample=image < n_samples)
    result = TaskCheck(rows=tally.rows(score_allowed=tolerance), metrics=tally.metrics())
    # At reduced precision (``min_agreement`` set) the match rate decides, as task agreement does for every task;
    # what went unmatched is listed as evidence. At full precision every non-borderline detection must match.
    unmatched, rate = tally.unmatched_lines(), tally.rate_lines(settings.get("min_agreement") or MIN_MATCH_RATE)
    reduced = settings.get("min_agreement") is not None
    result.messages, result.notes = (rate, unmatched) if reduced else (unmatched + rate, [])
    seen = tally.counts["sample_detections"] if n_samples else tally.counts["reference_detections"]
    if seen == 0:
        where = "the project's sample images" if n_samples else "the validation inputs"
        result.inconclusive = (f"the model detects nothing on {where} at score_threshold "
                               f"{settings.get('score_threshold')}, so there is nothing to compare; lower the "
                               "threshold or add sample images with objects")
    return result


@dataclass
class _Tally:
    """Matched-pair diffs and detection counts accumulated over every image."""

    box_allowed: float
    margin: float
    rotated: bool
    settings: dict[str, Any]
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("matched", "unmatched_reference", "unmatched_exported", "borderline", "reference_detections",
         "sample_detections"), 0))
    box_diffs: list[float] = field(default_factory=list)
    score_diffs: list[float] = field(default_factory=list)
    mask_misses: list[float] = field(default_factory=list)
    count_diffs: list[int] = field(default_factory=list)

    def add(self, r: dict[str, np.ndarray], c: dict[str, np.ndarray], on_sample: bool) -> None:
        """Match one image's detections and count what matched, what is borderline and what is not."""
        self.counts["reference_detections"] += len(r["scores"])
        self.counts["sample_detections"] += len(r["scores"]) if on_sample else 0
        self.count_diffs.append(abs(len(r["scores"]) - len(c["scores"])))
        matches = match_detections(r, c, self.rotated, close=self.box_allowed)
        self.counts["matched"] += len(matches)
        for i, j in matches:
            self.box_diffs.append(_box_diff(r["boxes"][i], c["boxes"][j], self.rotated))
            self.score_diffs.append(abs(float(r["scores"][i]) - float(c["scores"][j])))
            if "masks" in r:
                self.mask_misses.append(_mask_miss(r["masks"][i], c["masks"][j], self.settings))
        for side, det, paired in (("reference", r, {i for i, _ in matches}), ("exported", c, {j for _, j in matches})):
            for k in set(range(len(det["scores"]))) - paired:
                if _borderline(float(det["scores"][k]), det["scores"], self.settings, self.margin):
                    self.counts["borderline"] += 1
                else:
                    self.counts[f"unmatched_{side}"] += 1

    def rows(self, score_allowed: float) -> list[dict[str, Any]]:
        rows = [_row("boxes", self.box_diffs, self.box_allowed, "matched pairs; |Δ| of coordinates"
                     + (" and angle (radians, modulo π)" if self.rotated else "")),
                _row("scores", self.score_diffs, score_allowed, "matched pairs")]
        if self.mask_misses:
            note = f"1 − mask IoU per matched pair (union ≥ {MASK_UNION_FLOOR} px)"
            rows.append(_row("masks", self.mask_misses, 1 - MIN_MASK_IOU, note))
        return rows

    def metrics(self) -> dict[str, float]:
        metrics = {**{k: float(v) for k, v in self.counts.items()},
                   "max_count_difference": float(max(self.count_diffs, default=0))}
        if self.counts["reference_detections"]:
            metrics["match_rate"] = self.counts["matched"] / self.counts["reference_detections"]
        if self.mask_misses:
            metrics["min_mask_iou"] = 1 - max(self.mask_misses)
        return metrics

    def unmatched_lines(self) -> list[str]:
        counts = self.counts
        if not counts["unmatched_reference"] + counts["unmatched_exported"]:
            return []
        return [f"{counts['unmatched_reference']} PyTorch and {counts['unmatched_exported']} exported "
                f"detections have no counterpart (same label, IoU ≥ {MATCH_IOU})"]

    def rate_lines(self, floor: float) -> list[str]:
        counts = self.counts
        rate = counts["matched"] / counts["reference_detections"] if counts["reference_detections"] else None
        if rate is None or rate >= floor:
            return []
        return [f"only {rate:.1%} of PyTorch's detections are matched (need {floor:.0%}); "
                f"{counts['borderline']} sit at the score threshold or the max_detections cut"]


def _image_detections(outputs: dict[str, np.ndarray], row: int) -> dict[str, np.ndarray]:
    count = int(outputs["num_detections"][row])
    det = {key: outputs[key][row][:count] for key in ("boxes", "scores", "labels")}
    if "masks" in outputs:
        det["masks"] = outputs["masks"][row][:count]
    return det


def match_detections(ref: dict[str, np.ndarray], out: dict[str, np.ndarray], rotated: bool,
           close: float = 0.0) -> list[tuple[int, int]]:
    """Greedy one-to-one matching by IoU (same label, IoU ≥ MATCH_IOU), best overlaps first.

    Boxes whose coordinates all agree within ``close`` match too: a sliver 0.1 px wide has a low
    IoU with itself shifted by 0.04 px.
    """
    if not len(ref["scores"]) or not len(out["scores"]):
        return []
    iou = iou_matrix(ref["boxes"], out["boxes"], rotated)
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
def segmentation(pairs: list[Pair], names: tuple[str, ...], n_samples: int, floor: float,
                 tie: float | None = None) -> TaskCheck:
    """Pixel agreement of class masks (argmax of logits, or the mask output); with ``tie`` (full precision: the
    allowed difference relative to the scores' peak, as for raw outputs) a near tie agrees on either class."""
    result = TaskCheck()
    agree = ties = total = foreground = 0
    allowed = None if tie is None else tie * max(1.0, max(
        (float(np.abs(reference[0]).max()) for _, reference, _ in pairs if reference[0].size), default=1.0))
    for indices, reference, exported in pairs:
        ref, out = _class_map(reference[0]), _class_map(exported[0])
        same = ref == out
        if allowed is not None and reference[0].ndim == 4:  # scores: the class the file picked, scored by PyTorch
            scores = reference[0].astype(np.float64)
            picked = np.take_along_axis(scores, out[:, None], axis=1)[:, 0]
            near = scores.max(1) - picked <= allowed
            ties += int((near & ~same).sum())
            same |= near
        agree += int(same.sum())
        total += ref.size
        on_samples = [row for row, image in enumerate(indices) if image < n_samples] if n_samples else list(
            range(len(indices)))
        foreground += int((ref[on_samples] != 0).sum())
    agreement = agree / total if total else 0.0
    result.metrics = {"pixel_agreement": agreement}
    if ties:
        result.notes.append(f"{ties / total:.2%} of the pixels are near ties the file broke the other way (their "
                            f"two best classes within the allowed difference, {allowed:.2g}): counted "
                            "as agreeing")
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


def top1_agreement(pairs: list[Pair]) -> dict[str, float]:
    """Share of inputs whose top-1 class (argmax of the first output) is the same in both."""
    if not pairs:
        return {}
    ref = np.concatenate([r[0] for _, r, _ in pairs])
    cand = np.concatenate([c[0] for _, _, c in pairs])
    return {"top1_agreement": float((ref.argmax(1) == cand.argmax(1)).mean())}


def _row(name: str, diffs: list[float], allowed: float, note: str) -> dict[str, Any]:
    values = np.asarray(diffs, dtype=np.float64)
    return {"name": name, "diffs": values, "allowed": allowed, "note": note}
