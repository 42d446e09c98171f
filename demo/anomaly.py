"""Demo anomaly detection: PaDiM-style resnet18 and a conv autoencoder on striped textures."""

from __future__ import annotations

from typing import Any

import numpy as np

from demo.scenes import SIZE, draw_textures, normalize_images
from demo.training import TrainedExperiment, auroc, snapshot, train_supervised


def train_padim(rng: np.random.Generator) -> TrainedExperiment:
    import torch

    from exporter.models.anomaly import PadimModel

    normal_val = normalize_images(draw_textures(24, rng, False))
    anomalous_val = normalize_images(draw_textures(24, rng, True))
    model = PadimModel((3, SIZE, SIZE)).eval()
    snapshots = []
    for epoch, count in enumerate((32, 96)):
        model.fit(normalize_images(draw_textures(count, rng, False)))
        with torch.no_grad():
            value = auroc(model(normal_val)[1].numpy(), model(anomalous_val)[1].numpy())
        snapshots.append((epoch, value, snapshot(model)))
    best = max(snapshots, key=lambda s: s[1])
    meta = {"architecture": "padim_resnet18", "n_features": 100}
    return TrainedExperiment("exp-padim-resnet18", "PaDiM resnet18 stripes", meta, best,
                             snapshots[-1], "val_auroc", {"val_auroc": best[1]})


def train_autoencoder(rng: np.random.Generator) -> TrainedExperiment:

    from exporter.models.anomaly import ConvAutoencoder

    x = normalize_images(draw_textures(256, rng, False))
    normal_val = normalize_images(draw_textures(24, rng, False))
    anomalous_val = normalize_images(draw_textures(24, rng, True))
    model = ConvAutoencoder((3, SIZE, SIZE))

    def score(_: Any) -> float:
        return auroc(model(normal_val)[1].numpy(), model(anomalous_val)[1].numpy())

    best, last = train_supervised(
        model, x, x, x[:1], score, epochs=6, higher_is_better=True, lr=3e-3,
        loss_fn=lambda out, target: out[0].mean())
    meta = {"architecture": "autoencoder"}
    return TrainedExperiment("exp-autoencoder", "conv autoencoder stripes", meta, best, last,
                             "val_auroc", {"val_auroc": best[1]})
