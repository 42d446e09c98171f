"""Box geometry shared by validation and the demo: IoU of axis-aligned and of rotated boxes (numpy)."""

from __future__ import annotations

from typing import Any

import numpy as np


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two ``(x1, y1, x2, y2)`` boxes."""
    return float(iou_matrix(np.asarray(a)[None], np.asarray(b)[None], rotated=False)[0, 0])


def iou_matrix(a: np.ndarray, b: np.ndarray, rotated: bool) -> np.ndarray:
    """IoU of every box of ``a`` with every box of ``b``: ``(x1, y1, x2, y2)`` boxes, or
    ``(cx, cy, w, h, θ)`` with ``rotated`` (exact polygon IoU, computed only where boxes can touch)."""
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
    reach = np.hypot(a[:, None, 2] + b[None, :, 2], a[:, None, 3] + b[None, :, 3]) / 2
    near = np.hypot(a[:, None, 0] - b[None, :, 0], a[:, None, 1] - b[None, :, 1]) < reach
    iou = np.zeros((len(a), len(b)))
    for i, j in zip(*np.nonzero(near), strict=True):
        iou[i, j] = rotated_iou(a[i], b[j])
    return iou


def rotated_corners(boxes: Any) -> Any:
    """Corners ``[..., 4, 2]`` of ``(cx, cy, w, h, θ)`` boxes, as numpy."""
    boxes = np.asarray(boxes, dtype=np.float64)
    cx, cy, w, h, t = (boxes[..., i] for i in range(5))
    cos, sin = np.cos(t), np.sin(t)
    dx = np.stack([w, -w, -w, w], -1) / 2
    dy = np.stack([h, h, -h, -h], -1) / 2
    return np.stack([cx[..., None] + dx * cos[..., None] - dy * sin[..., None],
                     cy[..., None] + dx * sin[..., None] + dy * cos[..., None]], -1)


def rotated_iou(box_a: Any, box_b: Any) -> float:
    """Exact IoU of two rotated boxes by convex polygon clipping (Sutherland–Hodgman)."""
    poly_a, poly_b = rotated_corners(box_a), rotated_corners(box_b)

    def area(poly: Any) -> float:
        x, y = poly[:, 0], poly[:, 1]
        return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))

    def clip(subject: list, a: Any, b: Any) -> list:
        def inside(p: Any) -> bool:
            return (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0]) >= 0

        def cross(p: Any, q: Any) -> Any:
            d1, d2 = q - p, b - a
            denom = d1[0] * d2[1] - d1[1] * d2[0]
            t = ((a[0] - p[0]) * d2[1] - (a[1] - p[1]) * d2[0]) / denom if denom else 0.0
            return p + t * d1

        out = []
        for i, current in enumerate(subject):
            previous = subject[i - 1]
            if inside(current):
                if not inside(previous):
                    out.append(cross(previous, current))
                out.append(current)
            elif inside(previous):
                out.append(cross(previous, current))
        return out

    # both polygons counter-clockwise for the inside test
    def ccw(poly: Any) -> Any:
        x, y = poly[:, 0], poly[:, 1]
        return poly if float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) > 0 else poly[::-1]

    poly_a, poly_b = ccw(poly_a), ccw(poly_b)
    clipped = list(poly_a)
    for i in range(4):
        if not clipped:
            break
        clipped = clip(clipped, poly_b[i], poly_b[(i + 1) % 4])
    inter = area(np.array(clipped)) if len(clipped) >= 3 else 0.0
    union = area(poly_a) + area(poly_b) - inter
    return inter / union if union > 0 else 0.0

