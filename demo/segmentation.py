"""Demo semantic segmentation: torchvision's LR-ASPP MobileNetV3 on scenes of shapes."""

from __future__ import annotations

from typing import Any

import numpy as np

from demo.scenes import SCENE, SHAPES, draw_scenes, normalize_images
from demo.training import TrainedExperiment, train_epochs


def train_segmenter(rng: np.random.Generator) -> TrainedExperiment:
    """torchvision LR-ASPP MobileNetV3 on shape scenes; metric: mean IoU of the shape classes."""
    import torch
    import torchvision

    model = torchvision.models.segmentation.lraspp_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=len(SHAPES) + 1)
    for module in model.modules():  # MobileNetV3's BN momentum 0.01 lags far behind a short run
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = 0.1
    val_x, val_t = draw_scenes(16, rng)
    val_y = class_maps(val_t)
    weights = torch.tensor([0.1] + [1.0] * len(SHAPES))  # shapes cover ~10 % of a scene

    def batch() -> tuple[Any, Any]:
        x, targets = draw_scenes(8, rng)
        return normalize_images(x), torch.from_numpy(class_maps(targets))

    def metric() -> float:
        pred = model(normalize_images(val_x))["out"].argmax(1).numpy()
        ious = [((pred == c) & (val_y == c)).sum() / max(((pred == c) | (val_y == c)).sum(), 1)
                for c in range(1, len(SHAPES) + 1)]
        return float(np.mean(ious))

    snapshots = train_epochs(model, 2, 60, batch,
                        lambda b: torch.nn.functional.cross_entropy(model(b[0])["out"], b[1], weight=weights),
                        metric, lr=3e-3)
    meta = {"architecture": "lraspp_mobilenet_v3_large", "num_classes": len(SHAPES) + 1,
            "class_names": ["background", *SHAPES], "input_size": [3, SCENE, SCENE]}
    return TrainedExperiment("exp-lraspp-shapes", "LR-ASPP MobileNetV3 shapes", meta,
                             max(snapshots, key=lambda s: s[1]), snapshots[-1], "val_miou",
                             {"val_miou": max(s[1] for s in snapshots)})


def class_maps(targets: list[dict[str, np.ndarray]]) -> np.ndarray:
    maps = np.zeros((len(targets), SCENE, SCENE), np.int64)
    for i, t in enumerate(targets):
        for mask, label in zip(t["masks"], t["labels"], strict=True):
            maps[i][mask.astype(bool)] = label
    return maps
