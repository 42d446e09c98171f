"""Labelled validation sets for the demo projects (``data/val/``), in each task's standard layout,
drawn from the same generators as training but from their own random stream (held out)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from demo.scenes import PLATES, SHAPES, draw_plates, draw_scenes, draw_shapes, draw_textures, save_png
from exporter.geometry import rotated_corners

VAL_IMAGES = 100  # the floor; a few seconds to evaluate at 64–128 px


def shapes_imagefolder(folder: Path, rng: np.random.Generator) -> None:
    """Classification: ``<class>/*.png``."""
    images, labels, _ = draw_shapes(VAL_IMAGES, rng)
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        save_png(image, _mkdir(folder / SHAPES[label]) / f"val_{i:03d}.png")


def shapes_centres(folder: Path, rng: np.random.Generator) -> None:
    """Regression: ``images/*.png`` + ``targets.csv`` (file, center_y, center_x)."""
    images, _, centres = draw_shapes(VAL_IMAGES, rng)
    rows = []
    for i, (image, centre) in enumerate(zip(images, centres, strict=True)):
        save_png(image, _mkdir(folder / "images") / f"val_{i:03d}.png")
        rows.append([f"val_{i:03d}.png", f"{centre[0]:.6f}", f"{centre[1]:.6f}"])
    with open(folder / "targets.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["file", "center_y", "center_x"], *rows])


def textures_mvtec(folder: Path, rng: np.random.Generator) -> None:
    """Anomaly detection: MVTec AD ``good/`` and one defect folder, ``blob/``."""
    for name, anomalous in (("good", False), ("blob", True)):
        for i, image in enumerate(draw_textures(VAL_IMAGES // 2, rng, anomalous)):
            save_png(image, _mkdir(folder / name) / f"{i:03d}.png")


def scenes_coco(folder: Path, rng: np.random.Generator) -> None:
    """Detection and instance segmentation: COCO ``images/`` + ``annotations.json`` (RLE masks)."""
    from pycocotools import mask as mask_utils

    images, targets = draw_scenes(VAL_IMAGES, rng)
    entries, annotations = [], []
    for i, (image, target) in enumerate(zip(images, targets, strict=True)):
        name = f"val_{i:03d}.png"
        save_png(image, _mkdir(folder / "images") / name)
        entries.append({"id": i + 1, "file_name": name, "width": image.shape[2], "height": image.shape[1]})
        for box, label, mask in zip(target["boxes"], target["labels"], target["masks"], strict=True):
            rle = mask_utils.encode(np.asfortranarray(mask))
            x1, y1, x2, y2 = (float(v) for v in box)
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": int(label),
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": float(mask.sum()), "iscrowd": 0,
                                "segmentation": {"size": list(rle["size"]), "counts": rle["counts"].decode()}})
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(SHAPES)]
    (folder / "annotations.json").write_text(json.dumps(
        {"images": entries, "annotations": annotations, "categories": categories}))


def scenes_masks(folder: Path, rng: np.random.Generator) -> None:
    """Segmentation: ``images/*.png`` + ``masks/*.png`` of class ids (0 = background)."""
    from demo.segmentation import class_maps

    images, targets = draw_scenes(VAL_IMAGES, rng)
    for i, (image, classes) in enumerate(zip(images, class_maps(targets), strict=True)):
        save_png(image, _mkdir(folder / "images") / f"val_{i:03d}.png")
        _save_mask(classes, _mkdir(folder / "masks") / f"val_{i:03d}.png")


def plates_dota(folder: Path, rng: np.random.Generator) -> None:
    """Oriented detection: DOTA ``images/*.png`` + ``labelTxt/*.txt``."""
    images, targets = draw_plates(VAL_IMAGES, rng)
    for i, (image, rows) in enumerate(zip(images, targets, strict=True)):
        save_png(image, _mkdir(folder / "images") / f"val_{i:03d}.png")
        lines = []
        for row in rows:
            corners = rotated_corners(row[:5]).reshape(-1)
            lines.append(" ".join(f"{v:.2f}" for v in corners) + f" {PLATES[int(row[5])]} 0")
        (_mkdir(folder / "labelTxt") / f"val_{i:03d}.txt").write_text("\n".join(lines) + "\n")


def _save_mask(classes: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(classes.astype(np.uint8), mode="L").save(path)


def _mkdir(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder
