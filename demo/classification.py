"""Demo classification and regression: resnet18 telling shapes apart, and finding their centre."""

from __future__ import annotations

import numpy as np

from demo.scenes import SHAPES, draw_shapes, normalize_images
from demo.training import TrainedExperiment, train_supervised


def train_classifier(rng: np.random.Generator) -> TrainedExperiment:
    import torch
    import torchvision

    x, y, _ = draw_shapes(640, rng)
    xv, yv, _ = draw_shapes(96, rng)
    model = torchvision.models.resnet18(weights=None, num_classes=len(SHAPES))
    labels = torch.from_numpy(yv)
    best, last = train_supervised(
        model, normalize_images(x), torch.from_numpy(y), normalize_images(xv),
        lambda out: (out.argmax(1) == labels).float().mean(), epochs=6,
        loss_fn=torch.nn.functional.cross_entropy, higher_is_better=True)
    meta = {"architecture": "resnet18", "num_classes": len(SHAPES), "class_names": list(SHAPES)}
    return TrainedExperiment("exp-resnet18-shapes", "resnet18 shapes", meta, best, last,
                             "val_accuracy", {"val_accuracy": best[1]})


def train_regressor(rng: np.random.Generator) -> TrainedExperiment:
    import torch
    import torchvision

    x, _, c = draw_shapes(480, rng)
    xv, _, cv = draw_shapes(96, rng)
    model = torchvision.models.resnet18(weights=None, num_classes=2)
    target = torch.from_numpy(cv)
    best, last = train_supervised(
        model, normalize_images(x), torch.from_numpy(c), normalize_images(xv),
        lambda out: (out - target).abs().mean(), epochs=4,
        loss_fn=torch.nn.functional.mse_loss, higher_is_better=False)
    meta = {"architecture": "resnet18", "num_outputs": 2, "output_names": ["center_y", "center_x"]}
    return TrainedExperiment("exp-resnet18-center", "resnet18 shape centre", meta, best, last,
                             "val_mae", {"val_mae": best[1]})
