"""Demo oriented detection: ``obb_resnet18`` on rotated bars and plates."""

from __future__ import annotations

from typing import Any

import numpy as np

from demo.scenes import PLATES, SCENE, draw_plates
from demo.training import TrainedExperiment, detections_above, recall, train_epochs
from exporter.geometry import rotated_iou


def train_oriented(rng: np.random.Generator) -> TrainedExperiment:
    """``obb_resnet18`` on rotated bars and plates: focal loss on centre cells, L1 on box terms."""
    import torch

    from exporter.models.oriented import STRIDE, OrientedDetector, OrientedOutputs

    model = OrientedDetector(len(PLATES))
    val_x, val_t = draw_plates(16, rng)

    def batch() -> tuple[Any, list[np.ndarray]]:
        x, targets = draw_plates(8, rng)
        return torch.from_numpy(x), targets

    def loss(b: tuple[Any, list[np.ndarray]]) -> Any:
        from torchvision.ops import sigmoid_focal_loss

        cls, reg = model(b[0])
        target = torch.zeros_like(cls)
        rows, wanted = [], []
        for i, objects in enumerate(b[1]):
            for cx, cy, w, h, theta, label in objects:
                gx, gy = int(cx // STRIDE), int(cy // STRIDE)
                target[i, int(label), gy, gx] = 1.0
                rows.append((i, gy, gx))
                wanted.append([cx / STRIDE - gx, cy / STRIDE - gy, np.log(w / STRIDE), np.log(h / STRIDE),
                               np.sin(2 * theta), np.cos(2 * theta)])
        index = torch.tensor(rows)
        pred = reg[index[:, 0], :, index[:, 1], index[:, 2]]
        pred = torch.cat([torch.sigmoid(pred[:, :2]), pred[:, 2:]], dim=1)
        box_loss = (pred - torch.tensor(np.array(wanted), dtype=torch.float32)).abs().mean()
        return sigmoid_focal_loss(cls, target, reduction="sum") / len(rows) + box_loss

    def metric() -> float:
        found = detections_above(OrientedOutputs(model, {}).eval(), val_x)
        return recall(found, [(t[:, :5], t[:, 5].astype(np.int64)) for t in val_t], rotated_iou)

    snapshots = train_epochs(model, 2, 80, batch, loss, metric, lr=2e-3)
    meta = {"architecture": "obb_resnet18", "num_classes": len(PLATES), "class_names": list(PLATES),
            "input_size": [3, SCENE, SCENE]}
    return TrainedExperiment("exp-obb-resnet18", "obb_resnet18 plates", meta,
                             max(snapshots, key=lambda s: s[1]), snapshots[-1], "val_recall",
                             {"val_recall": max(s[1] for s in snapshots)})
