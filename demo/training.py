"""Training loops and metrics shared by the demo's experiments (a few seconds each, on the CPU)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class TrainedExperiment:
    """One experiment's checkpoints (state dicts per epoch) and metrics."""

    id: str
    name: str
    model_meta: dict[str, Any]
    best: tuple[int, float, dict]
    last: tuple[int, float, dict]
    metric_name: str
    metrics: dict[str, float]


def snapshot(model) -> dict:
    """A detached copy of the model's weights."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def train_supervised(model, x_train, y_train, x_val, score: Callable, epochs: int, loss_fn,
                      higher_is_better: bool, lr: float = 2e-3):
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    best, last = None, None
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x_train))
        for idx in order.split(32):
            opt.zero_grad()
            loss_fn(model(x_train[idx]), y_train[idx]).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            metric = float(score(model(x_val)))
        last = (epoch, metric, snapshot(model))
        if best is None or (metric > best[1] if higher_is_better else metric < best[1]):
            best = last
    return best, last


def auroc(normal: np.ndarray, anomalous: np.ndarray) -> float:
    """Probability that an anomalous score ranks above a normal one."""
    return float((anomalous[:, None] > normal[None, :]).mean()
                 + 0.5 * (anomalous[:, None] == normal[None, :]).mean())


def train_steps(model, opt, steps: int, batch: Callable[[], Any], loss: Callable[[Any], Any]) -> None:
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        loss(batch()).backward()
        opt.step()
    model.eval()


def train_epochs(model, epochs: int, steps: int, batch: Callable, loss: Callable, metric: Callable[[], float],
            lr: float) -> list[tuple[int, float, dict]]:
    """Train ``epochs`` × ``steps`` on fresh synthetic batches; snapshot and score after each epoch."""
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    snapshots = []
    for epoch in range(epochs):
        train_steps(model, opt, steps, batch, loss)
        with torch.no_grad():
            snapshots.append((epoch, float(metric()), snapshot(model)))
    return snapshots


def recall(found: list[tuple[np.ndarray, np.ndarray]], targets: list[tuple[np.ndarray, np.ndarray]],
            iou: Callable[[np.ndarray, np.ndarray], float]) -> float:
    """Share of target objects found with the right label at IoU ≥ 0.5."""
    hits = total = 0
    for (boxes, labels), (true_boxes, true_labels) in zip(found, targets, strict=True):
        total += len(true_labels)
        hits += sum(any(lab == t_lab and iou(box, t_box) >= 0.5 for box, lab in zip(boxes, labels, strict=True))
                    for t_box, t_lab in zip(true_boxes, true_labels, strict=True))
    return hits / max(total, 1)


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return float(w * h / union) if union > 0 else 0.0


def detections_above(wrapped, images: np.ndarray, threshold: float = 0.5) -> list[tuple[np.ndarray, np.ndarray]]:
    import torch

    boxes, scores, labels, count = wrapped(torch.from_numpy(images))[:4]
    return [(boxes[i, :n][scores[i, :n] >= threshold].numpy(), labels[i, :n][scores[i, :n] >= threshold].numpy())
            for i, n in enumerate(count.tolist())]
