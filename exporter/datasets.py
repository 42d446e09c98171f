"""Labelled validation sets (``projects/<id>/data/val/``): one standard layout per task, read here.

Each task names its layout (``Task.read_val_set``); the readers below check it before anything is
evaluated and fail with a ``DatasetError`` that names what was expected and what was found.
The digest identifies a set by its files' names and contents, so cached predictions and stored
evaluations say exactly which data they were computed on.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from exporter.errors import DatasetError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
IGNORE_INDEX = 255  # segmentation masks: pixels that count for no class


@dataclass(frozen=True)
class ValSet:
    """Images and their targets (task-specific, one per image), in a fixed order."""

    folder: Path
    images: tuple[Path, ...]
    targets: tuple[Any, ...]
    layout: str

    def subset(self, count: int) -> ValSet:
        """``count`` images spread evenly over the set (evaluation's ``max_images``): sets are stored class
        by class, so the first ``count`` could all be one class."""
        if count >= len(self.images):
            return self
        keep = sorted({round(i * (len(self.images) - 1) / max(count - 1, 1)) for i in range(count)})
        return ValSet(self.folder, tuple(self.images[i] for i in keep), tuple(self.targets[i] for i in keep),
                      self.layout)


def digest(folder: Path) -> str:
    """sha256 over every file's relative path and content (``sha256:`` + 16 hex digits)."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return "sha256:" + h.hexdigest()[:16]


def images_in(folder: Path, what: str) -> list[Path]:
    """The images directly in ``folder`` (sorted); refuses a missing or empty folder."""
    if not folder.is_dir():
        raise DatasetError(f"Expected a folder {what} at {folder.name}/; it is missing.")
    images = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise DatasetError(f"{folder.name}/ holds no images (png, jpg, bmp); expected {what}.")
    return images


def companion(image: Path, folder: Path, sub: str, suffix: str) -> Path:
    """The file in ``folder/sub/`` that belongs to ``image`` (same stem), or a ``DatasetError`` naming it."""
    path = folder / sub / f"{image.stem}{suffix}"
    if not path.is_file():
        raise DatasetError(f"{sub}/{path.name} is missing for images/{image.name}.")
    return path


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of an image, or a ``DatasetError`` naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:
            return img.size
    except (OSError, UnidentifiedImageError, SyntaxError):
        raise DatasetError(f"{path.name} is not a readable image.") from None


def image_folder(folder: Path, class_names: list[str]) -> ValSet:
    """Classification: ImageFolder, ``<class_name>/*``; class order is ``class_names``."""
    found = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    unknown = [name for name in found if name not in class_names]
    if unknown:
        raise DatasetError(f"Class folder(s) {', '.join(unknown)} are not among the model's classes "
                           f"({', '.join(class_names)}); rename or remove them.")
    if not found:
        raise DatasetError("Expected one folder per class (ImageFolder: <class_name>/*.png); found none.")
    images, labels = [], []
    for name in found:
        paths = images_in(folder / name, f"of class {name}")
        images += paths
        labels += [class_names.index(name)] * len(paths)
    return ValSet(folder, tuple(images), tuple(labels), "imagefolder")


def regression_csv(folder: Path, output_names: list[str]) -> ValSet:
    """Regression: ``images/*`` + ``targets.csv`` with a ``file`` column and one column per output."""
    table = folder / "targets.csv"
    if not table.is_file():
        raise DatasetError("Expected targets.csv (file,<output names…>) beside images/; it is missing.")
    with open(table, newline="") as fh:
        rows = list(csv.DictReader(fh))
    columns = [c for c in (rows[0].keys() if rows else []) if c != "file"]
    if not rows or "file" not in rows[0] or len(columns) != len(output_names):
        raise DatasetError(f"targets.csv needs a 'file' column and {len(output_names)} target column(s) "
                           f"({', '.join(output_names)}); found {', '.join(rows[0]) if rows else 'no rows'}.")
    order = [c for c in output_names if c in columns] if set(output_names) <= set(columns) else columns
    images, targets = [], []
    for row in rows:
        path = folder / "images" / row["file"]
        if not path.is_file():
            raise DatasetError(f"targets.csv names {row['file']}, which is not in images/.")
        try:
            targets.append(np.array([float(row[c]) for c in order], dtype=np.float32))
        except ValueError:
            raise DatasetError(f"targets.csv row {row['file']} has a value that is not a number.") from None
        images.append(path)
    return ValSet(folder, tuple(images), tuple(targets), "images+targets.csv")


def mvtec(folder: Path) -> ValSet:
    """Anomaly detection: MVTec AD — ``good/*``, ``<defect>/*``, optional ``ground_truth/<defect>/<name>_mask.png``.

    Targets are ``(label, mask_path | None)`` with label 0 for good, 1 for a defect.
    """
    good = images_in(folder / "good", "of normal images (good/)")
    defects = sorted(p for p in folder.iterdir() if p.is_dir() and p.name not in ("good", "ground_truth"))
    if not defects:
        raise DatasetError("Expected at least one defect folder beside good/ (MVTec AD: good/, <defect>/).")
    images, targets = list(good), [(0, None)] * len(good)
    for defect in defects:
        for path in images_in(defect, f"of defect {defect.name}"):
            mask = folder / "ground_truth" / defect.name / f"{path.stem}_mask.png"
            images.append(path)
            targets.append((1, mask if mask.is_file() else None))
    return ValSet(folder, tuple(images), tuple(targets), "mvtec")


def masks(folder: Path, num_classes: int) -> ValSet:
    """Segmentation: ``images/*`` + ``masks/<stem>.png`` of class ids (255 = ignore)."""
    from PIL import Image

    images = images_in(folder / "images", "images/")
    targets = []
    for path in images:
        mask = companion(path, folder, "masks", ".png")
        if image_size(mask) != image_size(path):
            raise DatasetError(f"masks/{mask.name} is {image_size(mask)} but its image is {image_size(path)}.")
        with Image.open(mask) as img:
            values = np.unique(np.asarray(img))
        bad = [int(v) for v in values if v >= num_classes and v != IGNORE_INDEX]
        if bad:
            raise DatasetError(f"masks/{mask.name} holds class id(s) {bad}, outside 0–{num_classes - 1} "
                               f"(and {IGNORE_INDEX} = ignore).")
        targets.append(mask)
    return ValSet(folder, tuple(images), tuple(targets), "images+masks")


def coco(folder: Path, class_names: list[str], with_masks: bool) -> ValSet:
    """Detection / instance segmentation: COCO ``images/*`` + ``annotations.json``.

    Categories are matched to ``class_names`` by name. Targets are ``{"boxes" [K, 4] xyxy,
    "labels" [K], "size" (w, h), "masks": [K, H, W] uint8 when ``with_masks``}``.
    """
    path = folder / "annotations.json"
    if not path.is_file():
        raise DatasetError("Expected annotations.json (COCO) beside images/; it is missing.")
    try:
        data = json.loads(path.read_text())
        categories = {c["id"]: c["name"] for c in data["categories"]}
        entries = data["images"]
        annotations = data.get("annotations", [])
    except (ValueError, KeyError, TypeError):
        raise DatasetError("annotations.json is not COCO: it needs images, annotations and categories.") from None
    unknown = sorted(set(categories.values()) - set(class_names))
    if unknown:
        raise DatasetError(f"COCO categories {', '.join(unknown)} are not among the model's classes "
                           f"({', '.join(class_names)}).")
    by_image: dict[Any, list[dict[str, Any]]] = {}
    for ann in annotations:
        if ann.get("category_id") not in categories:
            raise DatasetError(f"Annotation {ann.get('id')} has category_id {ann.get('category_id')}, "
                               "which is not in categories.")
        by_image.setdefault(ann.get("image_id"), []).append(ann)
    images, targets = [], []
    for entry in entries:
        image = folder / "images" / str(entry.get("file_name"))
        if not image.is_file():
            raise DatasetError(f"annotations.json names images/{entry.get('file_name')}, which is missing.")
        size = image_size(image)
        anns = by_image.get(entry.get("id"), [])
        target = {"boxes": np.array([_xyxy(a, image.name) for a in anns], dtype=np.float32).reshape(-1, 4),
                  "labels": np.array([class_names.index(categories[a["category_id"]]) for a in anns], dtype=np.int64),
                  "size": size}
        if with_masks:
            target["masks"] = np.stack([_coco_mask(a, size, image.name) for a in anns]) if anns else np.zeros(
                (0, size[1], size[0]), np.uint8)
        images.append(image)
        targets.append(target)
    if not images:
        raise DatasetError("annotations.json lists no images.")
    return ValSet(folder, tuple(images), tuple(targets), "coco")


def _xyxy(ann: dict[str, Any], image: str) -> list[float]:
    try:
        x, y, w, h = (float(v) for v in ann["bbox"])
    except (KeyError, TypeError, ValueError):
        raise DatasetError(f"Annotation {ann.get('id')} of {image} has no valid bbox [x, y, w, h].") from None
    if w <= 0 or h <= 0 or not all(map(math.isfinite, (x, y, w, h))):
        raise DatasetError(f"Annotation {ann.get('id')} of {image} has an empty or infinite bbox.")
    return [x, y, x + w, y + h]


def _coco_mask(ann: dict[str, Any], size: tuple[int, int], image: str) -> np.ndarray:
    from pycocotools import mask as mask_utils

    width, height = size
    seg = ann.get("segmentation")
    try:
        if isinstance(seg, list):
            if not seg or any(len(poly) < 6 or len(poly) % 2 for poly in seg):
                raise ValueError
            rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
        elif isinstance(seg, dict):
            rle = mask_utils.frPyObjects(seg, height, width) if isinstance(seg.get("counts"), list) else seg
        else:
            raise ValueError
        return mask_utils.decode(rle).astype(np.uint8)
    except (ValueError, TypeError, KeyError):
        raise DatasetError(f"Annotation {ann.get('id')} of {image} has a broken segmentation "
                           "(polygons need ≥ 3 points, or an RLE).") from None


def dota(folder: Path, class_names: list[str]) -> ValSet:
    """Oriented detection: DOTA ``images/*`` + ``labelTxt/<stem>.txt`` lines ``x1 y1 … x4 y4 class difficult``.

    Targets are ``{"boxes" [K, 5] (cx, cy, w, h, θ), "labels" [K], "difficult" [K] bool, "size"}``.
    """
    images = images_in(folder / "images", "images/")
    targets = []
    for image in images:
        label_file = companion(image, folder, "labelTxt", ".txt")
        boxes, labels, difficult = [], [], []
        for number, line in enumerate(label_file.read_text().splitlines(), 1):
            parts = line.split()
            if len(parts) < 9 or not _numbers(parts[:8]):
                continue  # DOTA headers (imagesource:, gsd:) and blank lines
            if parts[8] not in class_names:
                raise DatasetError(f"labelTxt/{label_file.name} line {number}: class {parts[8]!r} is not among "
                                   f"the model's classes ({', '.join(class_names)}).")
            boxes.append(polygon_to_rbox(np.array(parts[:8], dtype=np.float64).reshape(4, 2)))
            labels.append(class_names.index(parts[8]))
            difficult.append(len(parts) > 9 and parts[9] == "1")
        targets.append({"boxes": np.array(boxes, dtype=np.float32).reshape(-1, 5),
                        "labels": np.array(labels, dtype=np.int64), "difficult": np.array(difficult, dtype=bool),
                        "size": image_size(image)})
    return ValSet(folder, tuple(images), tuple(targets), "dota")


def _numbers(values: list[str]) -> bool:
    try:
        return all(math.isfinite(float(v)) for v in values)
    except ValueError:
        return False


def polygon_to_rbox(corners: np.ndarray) -> list[float]:
    """``(cx, cy, w, h, θ)`` of the rectangle through four corners in order (θ of the first edge)."""
    centre = corners.mean(0)
    first, second = corners[1] - corners[0], corners[2] - corners[1]
    width, height = float(np.hypot(*first)), float(np.hypot(*second))
    angle = math.atan2(float(first[1]), float(first[0]))
    angle = (angle + math.pi / 2) % math.pi - math.pi / 2  # a rectangle is the same after a half turn
    return [float(centre[0]), float(centre[1]), width, height, angle]
