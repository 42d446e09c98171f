"""Drawing one prediction onto its image (PIL only), for the gallery of disagreements.

Tasks call these from ``Task.draw``; coordinates are the model's input pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (210, 245, 60), (250, 190, 190), (0, 128, 128))


def colour(index: int) -> tuple[int, int, int]:
    """A distinct colour per class index."""
    return PALETTE[int(index) % len(PALETTE)]


def name_of(index: int, names: Sequence[str]) -> str:
    return str(names[index]) if 0 <= index < len(names) else str(index)


def caption(image: Image.Image, text: str, fill: tuple[int, int, int] = (255, 255, 255)) -> None:
    """``text`` on a dark band at the bottom of ``image``."""
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = draw.textbbox((0, 0), text)
    band = bottom - top + 4
    draw.rectangle((0, image.height - band, image.width, image.height), fill=(0, 0, 0))
    draw.text((2, image.height - band + 1), text, fill=fill)


def boxes(image: Image.Image, xyxy: np.ndarray, labels: np.ndarray, names: Sequence[str]) -> None:
    """Axis-aligned boxes with their class names."""
    draw = ImageDraw.Draw(image)
    for box, label in zip(np.asarray(xyxy).reshape(-1, 4), np.asarray(labels).reshape(-1), strict=True):
        draw.rectangle(tuple(float(v) for v in box), outline=colour(label), width=2)
        draw.text((float(box[0]) + 2, float(box[1]) + 1), name_of(int(label), names), fill=colour(label))


def polygons(image: Image.Image, corners: np.ndarray, labels: np.ndarray, names: Sequence[str]) -> None:
    """Closed polygons ``[K, 4, 2]`` (rotated boxes) with their class names."""
    draw = ImageDraw.Draw(image)
    for poly, label in zip(np.asarray(corners).reshape(-1, 4, 2), np.asarray(labels).reshape(-1), strict=True):
        points = [tuple(float(v) for v in p) for p in poly]
        draw.polygon(points, outline=colour(label), width=2)
        draw.text(points[0], name_of(int(label), names), fill=colour(label))


def overlay(image: Image.Image, classes: np.ndarray, alpha: float = 0.45, skip: int | None = 0) -> None:
    """Tint each pixel by its class (``[H, W]`` class ids; class ``skip`` left as it is)."""
    classes = np.asarray(Image.fromarray(np.asarray(classes, np.uint8)).resize(image.size, Image.NEAREST))
    pixels = np.asarray(image).astype(np.float32)
    for value in np.unique(classes):
        if skip is not None and value == skip:
            continue
        where = classes == value
        pixels[where] = (1 - alpha) * pixels[where] + alpha * np.array(colour(int(value)), np.float32)
    image.paste(Image.fromarray(pixels.clip(0, 255).astype(np.uint8)))


def masks(image: Image.Image, instance_masks: np.ndarray, labels: np.ndarray) -> None:
    """Instance masks ``[K, H, W]`` (probabilities or 0/1), tinted by class."""
    classes = np.zeros((image.height, image.width), np.uint8)
    for mask, label in zip(np.asarray(instance_masks), np.asarray(labels).reshape(-1), strict=True):
        plane = np.asarray(mask).reshape(np.shape(mask)[-2:]) >= 0.5
        resized = np.asarray(Image.fromarray(plane.astype(np.uint8) * 255).resize(image.size))
        classes[resized >= 128] = int(label)
    overlay(image, classes)


def side_by_side(task: Any, spec: Any, base: Image.Image, predictions: tuple[dict, dict], titles: tuple[str, str],
                 calibration: dict[str, float], size: tuple[int, int]) -> Image.Image:
    """``base`` (the image at the model's size) drawn once per prediction by ``task``, each scaled to ``size``,
    side by side under its title."""
    canvas = Image.new("RGB", (2 * size[0] + 4, size[1] + 14), (255, 255, 255))
    for k, (prediction, title) in enumerate(zip(predictions, titles, strict=True)):
        drawn = base.copy()
        task.draw(drawn, prediction, spec, calibration)
        canvas.paste(drawn.resize(size), (k * (size[0] + 4), 14))
        ImageDraw.Draw(canvas).text((k * (size[0] + 4) + 2, 1), title, fill=(0, 0, 0))
    return canvas
