"""Build the demo workspace: real, briefly trained small models on synthetic images.

Random-init nets can output ~constants, which makes validation vacuous (FINDINGS.md), so
every demo model is trained (or fitted) for a few seconds on generated scenes, and each
project ships sample images that validation uses as realistic inputs.

Projects (one per task this release covers):
- ``demo-classification``: resnet18 telling circles, squares and triangles apart.
- ``demo-regression``: resnet18 regressing the centre (x, y) of one shape.
- ``demo-anomaly``: PaDiM-style resnet18 and a conv autoencoder on striped textures, where
  anomalies are bright blobs.
- ``demo-detection`` / ``demo-instance-segmentation`` / ``demo-segmentation``: scenes of 1–3
  shapes at 128 px; a lite Faster R-CNN, a lite Mask R-CNN (resnet18 FPN, torchvision's
  classes) and torchvision's LR-ASPP MobileNetV3.
- ``demo-oriented``: rotated bars and plates, ``obb_resnet18``.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from exporter.models.spec import IMAGENET_NORMALIZATION
from exporter.store import utc_now

SIZE = 64
SCENE = 128  # detection and segmentation scenes: objects of 13–50 px
SHAPES = ("circle", "square", "triangle")
PLATES = ("bar", "plate")  # oriented demo: long thin vs. squarish rotated rectangles
Progress = Callable[[str, float], None]
DEMO_PROJECTS_ENV = "AISTUDIO_DEMO_PROJECTS"


# ---------------------------------------------------------------- synthetic scenes
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


def _normalize(images: np.ndarray):
    import torch

    from exporter.validation import normalize

    return normalize(torch.from_numpy(images), IMAGENET_NORMALIZATION)


def _save_png(image: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray((image.transpose(1, 2, 0) * 255).round().astype(np.uint8)).save(path)


# ---------------------------------------------------------------- training
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


def _snapshot(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _train_supervised(model, x_train, y_train, x_val, score: Callable, epochs: int, loss_fn,
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
        last = (epoch, metric, _snapshot(model))
        if best is None or (metric > best[1] if higher_is_better else metric < best[1]):
            best = last
    return best, last


def _auroc(normal: np.ndarray, anomalous: np.ndarray) -> float:
    """Probability that an anomalous score ranks above a normal one."""
    return float((anomalous[:, None] > normal[None, :]).mean()
                 + 0.5 * (anomalous[:, None] == normal[None, :]).mean())


def train_classifier(rng: np.random.Generator) -> TrainedExperiment:
    import torch
    import torchvision

    x, y, _ = draw_shapes(640, rng)
    xv, yv, _ = draw_shapes(96, rng)
    model = torchvision.models.resnet18(weights=None, num_classes=len(SHAPES))
    labels = torch.from_numpy(yv)
    best, last = _train_supervised(
        model, _normalize(x), torch.from_numpy(y), _normalize(xv),
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
    best, last = _train_supervised(
        model, _normalize(x), torch.from_numpy(c), _normalize(xv),
        lambda out: (out - target).abs().mean(), epochs=4,
        loss_fn=torch.nn.functional.mse_loss, higher_is_better=False)
    meta = {"architecture": "resnet18", "num_outputs": 2, "output_names": ["center_y", "center_x"]}
    return TrainedExperiment("exp-resnet18-center", "resnet18 shape centre", meta, best, last,
                             "val_mae", {"val_mae": best[1]})


def train_padim(rng: np.random.Generator) -> TrainedExperiment:
    import torch

    from exporter.models.anomaly import PadimModel

    normal_val = _normalize(draw_textures(24, rng, False))
    anomalous_val = _normalize(draw_textures(24, rng, True))
    model = PadimModel((3, SIZE, SIZE)).eval()
    snapshots = []
    for epoch, count in enumerate((32, 96)):
        model.fit(_normalize(draw_textures(count, rng, False)))
        with torch.no_grad():
            auroc = _auroc(model(normal_val)[1].numpy(), model(anomalous_val)[1].numpy())
        snapshots.append((epoch, auroc, _snapshot(model)))
    best = max(snapshots, key=lambda s: s[1])
    meta = {"architecture": "padim_resnet18", "n_features": 100}
    return TrainedExperiment("exp-padim-resnet18", "PaDiM resnet18 stripes", meta, best,
                             snapshots[-1], "val_auroc", {"val_auroc": best[1]})


def train_autoencoder(rng: np.random.Generator) -> TrainedExperiment:

    from exporter.models.anomaly import ConvAutoencoder

    x = _normalize(draw_textures(256, rng, False))
    normal_val = _normalize(draw_textures(24, rng, False))
    anomalous_val = _normalize(draw_textures(24, rng, True))
    model = ConvAutoencoder((3, SIZE, SIZE))

    def score(_: Any) -> float:
        return _auroc(model(normal_val)[1].numpy(), model(anomalous_val)[1].numpy())

    best, last = _train_supervised(
        model, x, x, x[:1], score, epochs=6, higher_is_better=True, lr=3e-3,
        loss_fn=lambda out, target: out[0].mean())
    meta = {"architecture": "autoencoder"}
    return TrainedExperiment("exp-autoencoder", "conv autoencoder stripes", meta, best, last,
                             "val_auroc", {"val_auroc": best[1]})


def _train_steps(model, opt, steps: int, batch: Callable[[], Any], loss: Callable[[Any], Any]) -> None:
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        loss(batch()).backward()
        opt.step()
    model.eval()


def _epochs(model, epochs: int, steps: int, batch: Callable, loss: Callable, metric: Callable[[], float],
            lr: float) -> list[tuple[int, float, dict]]:
    """Train ``epochs`` × ``steps`` on fresh synthetic batches; snapshot and score after each epoch."""
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    snapshots = []
    for epoch in range(epochs):
        _train_steps(model, opt, steps, batch, loss)
        with torch.no_grad():
            snapshots.append((epoch, float(metric()), _snapshot(model)))
    return snapshots


def _recall(found: list[tuple[np.ndarray, np.ndarray]], targets: list[tuple[np.ndarray, np.ndarray]],
            iou: Callable[[np.ndarray, np.ndarray], float]) -> float:
    """Share of target objects found with the right label at IoU ≥ 0.5."""
    hits = total = 0
    for (boxes, labels), (true_boxes, true_labels) in zip(found, targets, strict=True):
        total += len(true_labels)
        hits += sum(any(lab == t_lab and iou(box, t_box) >= 0.5 for box, lab in zip(boxes, labels, strict=True))
                    for t_box, t_lab in zip(true_boxes, true_labels, strict=True))
    return hits / max(total, 1)


def _box_iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return float(w * h / union) if union > 0 else 0.0


def _detections(wrapped, images: np.ndarray, threshold: float = 0.5) -> list[tuple[np.ndarray, np.ndarray]]:
    import torch

    boxes, scores, labels, count = wrapped(torch.from_numpy(images))[:4]
    return [(boxes[i, :n][scores[i, :n] >= threshold].numpy(), labels[i, :n][scores[i, :n] >= threshold].numpy())
            for i, n in enumerate(count.tolist())]


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
        found = _detections(DetectionOutputs(model, (3, SCENE, SCENE), {}).eval(), val_x)
        return _recall(found, [(t["boxes"], t["labels"]) for t in val_t], _box_iou)

    snapshots = _epochs(model, 2, 50, batch, lambda b: sum(model(*b).values()), metric, lr=1e-3)
    meta = {"architecture": architecture, "num_classes": len(SHAPES) + 1, "class_names": ["background", *SHAPES],
            "input_size": [3, SCENE, SCENE]}
    kind = "instances" if with_masks else "shapes"
    return TrainedExperiment(f"exp-{architecture.replace('_', '-')}", f"{architecture} {kind}", meta,
                             max(snapshots, key=lambda s: s[1]), snapshots[-1], "val_recall",
                             {"val_recall": max(s[1] for s in snapshots)})


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
    val_y = _class_maps(val_t)
    weights = torch.tensor([0.1] + [1.0] * len(SHAPES))  # shapes cover ~10 % of a scene

    def batch() -> tuple[Any, Any]:
        x, targets = draw_scenes(8, rng)
        return _normalize(x), torch.from_numpy(_class_maps(targets))

    def metric() -> float:
        pred = model(_normalize(val_x))["out"].argmax(1).numpy()
        ious = [((pred == c) & (val_y == c)).sum() / max(((pred == c) | (val_y == c)).sum(), 1)
                for c in range(1, len(SHAPES) + 1)]
        return float(np.mean(ious))

    snapshots = _epochs(model, 2, 60, batch,
                        lambda b: torch.nn.functional.cross_entropy(model(b[0])["out"], b[1], weight=weights),
                        metric, lr=3e-3)
    meta = {"architecture": "lraspp_mobilenet_v3_large", "num_classes": len(SHAPES) + 1,
            "class_names": ["background", *SHAPES], "input_size": [3, SCENE, SCENE]}
    return TrainedExperiment("exp-lraspp-shapes", "LR-ASPP MobileNetV3 shapes", meta,
                             max(snapshots, key=lambda s: s[1]), snapshots[-1], "val_miou",
                             {"val_miou": max(s[1] for s in snapshots)})


def _class_maps(targets: list[dict[str, np.ndarray]]) -> np.ndarray:
    maps = np.zeros((len(targets), SCENE, SCENE), np.int64)
    for i, t in enumerate(targets):
        for mask, label in zip(t["masks"], t["labels"], strict=True):
            maps[i][mask.astype(bool)] = label
    return maps


def train_oriented(rng: np.random.Generator) -> TrainedExperiment:
    """``obb_resnet18`` on rotated bars and plates: focal loss on centre cells, L1 on box terms."""
    import torch

    from exporter.models.oriented import STRIDE, OrientedDetector, OrientedOutputs, rotated_iou

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
        found = _detections(OrientedOutputs(model, {}).eval(), val_x)
        return _recall(found, [(t[:, :5], t[:, 5].astype(np.int64)) for t in val_t], rotated_iou)

    snapshots = _epochs(model, 2, 80, batch, loss, metric, lr=2e-3)
    meta = {"architecture": "obb_resnet18", "num_classes": len(PLATES), "class_names": list(PLATES),
            "input_size": [3, SCENE, SCENE]}
    return TrainedExperiment("exp-obb-resnet18", "obb_resnet18 plates", meta,
                             max(snapshots, key=lambda s: s[1]), snapshots[-1], "val_recall",
                             {"val_recall": max(s[1] for s in snapshots)})


# ---------------------------------------------------------------- writing
DEMO_PROJECTS: dict[str, dict[str, Any]] = {
    "demo-classification": {"name": "Demo · shape classification", "task": "classification",
                            "class_names": list(SHAPES), "train": (train_classifier,),
                            "samples": lambda rng: draw_shapes(4, rng)[0]},
    "demo-regression": {"name": "Demo · shape centre regression", "task": "regression",
                        "train": (train_regressor,), "samples": lambda rng: draw_shapes(4, rng)[0]},
    "demo-anomaly": {"name": "Demo · texture anomaly detection", "task": "anomaly_detection",
                     "train": (train_padim, train_autoencoder),
                     "samples": lambda rng: np.concatenate([draw_textures(2, rng, False),
                                                            draw_textures(2, rng, True)])},
    "demo-detection": {"name": "Demo · shape detection", "task": "object_detection",
                       "class_names": ["background", *SHAPES],
                       "train": (functools.partial(train_rcnn, architecture="fasterrcnn_resnet18_fpn"),),
                       "samples": lambda rng: draw_scenes(4, rng)[0]},
    "demo-instance-segmentation": {
        "name": "Demo · shape instance segmentation", "task": "instance_segmentation",
        "class_names": ["background", *SHAPES],
        "train": (functools.partial(train_rcnn, architecture="maskrcnn_resnet18_fpn"),),
        "samples": lambda rng: draw_scenes(4, rng)[0]},
    "demo-segmentation": {"name": "Demo · shape segmentation", "task": "segmentation",
                          "class_names": ["background", *SHAPES], "train": (train_segmenter,),
                          "samples": lambda rng: draw_scenes(4, rng)[0]},
    "demo-oriented": {"name": "Demo · oriented plates", "task": "oriented_object_detection",
                      "class_names": list(PLATES), "train": (train_oriented,),
                      "samples": lambda rng: draw_plates(4, rng)[0]},
}


def _write_checkpoint(path: Path, entry: tuple[int, float, dict], hparams: dict[str, Any]) -> None:
    import torch

    epoch, _, state = entry
    # The layout PyTorch Lightning's Trainer writes for a module holding ``self.model``.
    torch.save({"epoch": epoch, "global_step": (epoch + 1) * 15,
                "state_dict": {f"model.{k}": v for k, v in state.items()},
                "hyper_parameters": hparams}, path)


def _write_experiment(folder: Path, project_id: str, task: str, trained: TrainedExperiment) -> None:
    ckpt_dir = folder / "checkpoints"
    ckpt_dir.mkdir(parents=True)
    model = {"task": task, "input_size": [3, SIZE, SIZE], "normalization": IMAGENET_NORMALIZATION,
             **trained.model_meta}
    checkpoints = {}
    for name, entry in (("best", trained.best), ("last", trained.last)):
        _write_checkpoint(ckpt_dir / f"{name}.ckpt", entry, model)
        checkpoints[name] = {"path": f"checkpoints/{name}.ckpt", "epoch": entry[0],
                             "metric": round(entry[1], 6), "metric_name": trained.metric_name}
    meta = {"id": trained.id, "name": trained.name, "project_id": project_id, "task": task,
            "model": model, "metrics": {k: round(v, 6) for k, v in trained.metrics.items()},
            "status": "completed", "created_at": utc_now(), "checkpoints": checkpoints}
    (folder / "experiment.json").write_text(json.dumps(meta, indent=2))


def build_project(root: Path, project_id: str, seed: int = 0) -> Path:
    """Train and write one demo project atomically (built aside, then renamed into place)."""
    spec = DEMO_PROJECTS[project_id]
    rng = np.random.default_rng(seed)
    final = root / "projects" / project_id
    tmp = root / "projects" / f".building-{project_id}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "data" / "samples").mkdir(parents=True)
    meta = {"id": project_id, "name": spec["name"], "task": spec["task"], "created_at": utc_now()}
    if "class_names" in spec:
        meta["class_names"] = spec["class_names"]
    (tmp / "project.json").write_text(json.dumps(meta, indent=2))
    for i, image in enumerate(spec["samples"](rng)):
        _save_png(image, tmp / "data" / "samples" / f"sample_{i}.png")
    for train in spec["train"]:
        trained = train(rng)
        _write_experiment(tmp / "experiments" / trained.id, project_id, spec["task"], trained)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


def build_demo(root: str | os.PathLike[str], *, force: bool = False, progress: Progress | None = None,
               projects: list[str] | None = None) -> list[str]:
    """Build every demo project that is missing (all of them with ``force``).

    ``projects`` (default: ``$AISTUDIO_DEMO_PROJECTS``, comma-separated, else all) limits which.

    Returns:
        Ids of the projects that were built.

    Raises:
        UsageError: an unknown demo project id.
    """
    import torch

    from exporter.errors import UsageError

    chosen = projects or [p for p in os.environ.get(DEMO_PROJECTS_ENV, "").split(",") if p.strip()] or list(
        DEMO_PROJECTS)
    unknown = sorted(set(chosen) - set(DEMO_PROJECTS))
    if unknown:
        raise UsageError(f"Unknown demo project {', '.join(unknown)}; choose from {', '.join(DEMO_PROJECTS)}.")
    torch.manual_seed(0)
    root = Path(root)
    built = []
    todo = [p for p in DEMO_PROJECTS
            if p in chosen and (force or not (root / "projects" / p / "project.json").is_file())]
    for i, project_id in enumerate(todo):
        if progress:
            progress(f"Training {project_id}", i / max(len(todo), 1))
        start = time.perf_counter()
        build_project(root, project_id, seed=i)
        built.append(project_id)
        if progress:
            progress(f"Built {project_id} in {time.perf_counter() - start:.0f}s", (i + 1) / len(todo))
    return built
