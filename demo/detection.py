"""Demo object detection and instance segmentation: lite Faster / Mask R-CNN on scenes of shapes."""

from __future__ import annotations

import numpy as np

from demo.scenes import SCENE, SHAPES, draw_scenes
from demo.training import TrainedExperiment, detections_above, recall, train_epochs
from exporter.geometry import box_iou


def train_rcnn(rng: np.random.Generator, architecture: str) -> TrainedExperiment:
    """A lite Faster/Mask R-CNN on shape scenes; metric: recall at score ≥ 0.5, IoU ≥ 0.5."""
    import torch

    from exporter.models.detection import DetectionOutputs, build_detector

    model = build_detector(architecture, len(SHAPES) + 1, (3, SCENE, SCENE))
    with_masks = architecture.startswith("maskrcnn")
    val_x, val_t = draw_scenes(16, rng)

    def batch() -> tuple[list, list]:
        x, targets = draw_scenes(8, rng)
        keys = ("boxes", "labels", "masks") if with_masks else ("boxes", "labels")
        return list(torch.from_numpy(x)), [{k: torch.from_numpy(t[k]) for k in keys} for t in targets]

    def metric() -> float:
        found = detections_above(DetectionOutputs(model, (3, SCENE, SCENE), {}).eval(), val_x)
        return recall(found, [(t["boxes"], t["labels"]) for t in val_t], box_iou)

    snapshots = train_epochs(model, 2, 50, batch, lambda b: sum(model(*b).values()), metric, lr=1e-3)
    meta = {"architecture": architecture, "num_classes": len(SHAPES) + 1, "class_names": ["background", *SHAPES],
            "input_size": [3, SCENE, SCENE]}
    kind = "instances" if with_masks else "shapes"
    return TrainedExperiment(f"exp-{architecture.replace('_', '-')}", f"{architecture} {kind}", meta,
                             max(snapshots, key=lambda s: s[1]), snapshots[-1], "val_recall",
                             {"val_recall": max(s[1] for s in snapshots)})
