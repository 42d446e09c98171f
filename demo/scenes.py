"""Synthetic images with labels: shapes, scenes of shapes, rotated plates and striped textures."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from exporter.models.spec import IMAGENET_NORMALIZATION

SIZE = 64
SCENE = 128  # detection and segmentation scenes: objects of 13–50 px
SHAPES = ("circle", "square", "triangle")
PLATES = ("bar", "plate")  # oriented demo: long thin vs. squarish rotated rectangles


def _grid(size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    return np.mgrid[0:size, 0:size].astype(np.float32)


def draw_shapes(n: int, rng: np.random.Generator, size: int = SIZE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` images ``[n, 3, size, size]`` in [0, 1] with one shape each, its class and centre."""
    yy, xx = _grid(size)
    images = rng.uniform(0.0, 0.25, (n, 3, size, size)).astype(np.float32)
    labels = rng.integers(0, len(SHAPES), n)
    centres = rng.uniform(0.3, 0.7, (n, 2)).astype(np.float32)
    for i in range(n):
        cy, cx = centres[i] * size
        r = rng.uniform(0.12, 0.22) * size
        dy, dx = yy - cy, xx - cx
        if labels[i] == 0:
            mask = dy**2 + dx**2 <= r**2
        elif labels[i] == 1:
            mask = (np.abs(dy) <= r * 0.85) & (np.abs(dx) <= r * 0.85)
        else:
            mask = (dy <= r * 0.8) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.6)
        colour = rng.uniform(0.5, 1.0, 3).astype(np.float32)
        images[i][:, mask] = colour[:, None]
    return images, labels, centres


def draw_scenes(n: int, rng: np.random.Generator, size: int = SCENE,
                max_objects: int = 3) -> tuple[np.ndarray, list[dict[str, np.ndarray]]]:
    """Scenes with 1–``max_objects`` shapes; targets hold boxes (x1, y1, x2, y2), labels (1 = circle…)
    and masks (later shapes occlude earlier ones)."""
    yy, xx = _grid(size)
    images = rng.uniform(0.0, 0.25, (n, 3, size, size)).astype(np.float32)
    targets = []
    for i in range(n):
        masks, labels = [], []
        for _ in range(int(rng.integers(1, max_objects + 1))):
            label = int(rng.integers(0, len(SHAPES)))
            r = rng.uniform(0.1, 0.2) * size
            cy, cx = rng.uniform(r, size - r, 2)
            dy, dx = yy - cy, xx - cx
            if label == 0:
                mask = dy**2 + dx**2 <= r**2
            elif label == 1:
                mask = (np.abs(dy) <= r * 0.85) & (np.abs(dx) <= r * 0.85)
            else:
                mask = (dy <= r * 0.8) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.6)
            for earlier in masks:
                earlier &= ~mask
            images[i][:, mask] = rng.uniform(0.5, 1.0, 3).astype(np.float32)[:, None]
            masks.append(mask)
            labels.append(label + 1)
        kept = [k for k, m in enumerate(masks) if m.sum() > 20]  # drop shapes hidden by later ones
        boxes = [_mask_box(masks[k]) for k in kept]
        targets.append({"boxes": np.array(boxes, np.float32).reshape(-1, 4),
                        "labels": np.array([labels[k] for k in kept], np.int64),
                        "masks": np.array([masks[k] for k in kept], np.uint8).reshape(-1, size, size)})
    return images, targets


def _mask_box(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def draw_plates(n: int, rng: np.random.Generator, size: int = SCENE) -> tuple[np.ndarray, list[np.ndarray]]:
    """Scenes of 1–3 rotated rectangles; targets ``[k, 6]`` = (cx, cy, w, h, θ, label)."""
    yy, xx = _grid(size)
    images = rng.uniform(0.0, 0.25, (n, 3, size, size)).astype(np.float32)
    targets = []
    for i in range(n):
        rows = []
        for _ in range(int(rng.integers(1, 4))):
            label = int(rng.integers(0, len(PLATES)))
            w = rng.uniform(30, 48) if label == 0 else rng.uniform(18, 26)
            h = w / rng.uniform(3.0, 4.0) if label == 0 else w / rng.uniform(1.0, 1.3)
            cx, cy = rng.uniform(w / 2, size - w / 2, 2)
            theta = rng.uniform(-np.pi / 2, np.pi / 2)
            u = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)
            v = -(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)
            images[i][:, (np.abs(u) <= w / 2) & (np.abs(v) <= h / 2)] = rng.uniform(0.5, 1.0, 3)[:, None]
            rows.append([cx, cy, w, h, theta, label])
        targets.append(np.array(rows, np.float32))
    return images, targets


def draw_textures(n: int, rng: np.random.Generator, anomalous: bool, size: int = SIZE) -> np.ndarray:
    """Striped textures; anomalous ones carry a bright blob somewhere."""
    yy, xx = _grid(size)
    phase = rng.uniform(0, 2 * np.pi, n).astype(np.float32)
    stripes = 0.5 + 0.25 * np.sin(xx[None] * 0.6 + phase[:, None, None])
    images = np.repeat(stripes[:, None], 3, axis=1) * np.array([0.9, 0.6, 0.3], np.float32)[None, :, None, None]
    images = images + rng.normal(0, 0.03, images.shape).astype(np.float32)
    if anomalous:
        for i in range(n):
            cy, cx = rng.uniform(0.2, 0.8, 2) * size
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (size * 0.06) ** 2))
            images[i] += blob[None] * np.array([0.1, 0.8, 0.9], np.float32)[:, None, None]
    return np.clip(images, 0, 1).astype(np.float32)


def normalize_images(images: np.ndarray):
    import torch

    from exporter.validation import normalize

    return normalize(torch.from_numpy(images), IMAGENET_NORMALIZATION)


def save_png(image: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray((image.transpose(1, 2, 0) * 255).round().astype(np.uint8)).save(path)
