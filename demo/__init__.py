"""The demo workspace: real, briefly trained small models on synthetic images.

Random-init nets can output ~constants, which makes validation vacuous (docs/findings.md), so
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
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from demo import valsets
from demo.anomaly import train_autoencoder, train_padim
from demo.classification import train_classifier, train_regressor
from demo.detection import train_rcnn
from demo.oriented import train_oriented
from demo.scenes import PLATES, SHAPES, SIZE, draw_plates, draw_scenes, draw_shapes, draw_textures, save_png
from demo.segmentation import train_segmenter
from demo.training import TrainedExperiment
from exporter.models.spec import IMAGENET_NORMALIZATION
from exporter.workspace import write_experiment_json, write_project_json

Progress = Callable[[str, float], None]
DEMO_PROJECTS_ENV = "AISTUDIO_DEMO_PROJECTS"
VAL_SEED = 10_000  # labelled sets come from a random stream training never sees
SCENE_CLASSES = ["background", *SHAPES]  # torchvision detectors and segmenters count the background
DEMO_PROJECTS: dict[str, dict[str, Any]] = {  # val: writes the held-out labelled set (data/val)
    "demo-classification": {
        "name": "Demo · shape classification", "task": "classification", "class_names": list(SHAPES),
        "train": (train_classifier,), "val": valsets.shapes_imagefolder,
        "samples": lambda rng: draw_shapes(4, rng)[0]},
    "demo-regression": {
        "name": "Demo · shape centre regression", "task": "regression",
        "train": (train_regressor,), "val": valsets.shapes_centres,
        "samples": lambda rng: draw_shapes(4, rng)[0]},
    "demo-anomaly": {
        "name": "Demo · texture anomaly detection", "task": "anomaly_detection",
        "train": (train_padim, train_autoencoder), "val": valsets.textures_mvtec,
        "samples": lambda rng: np.concatenate([draw_textures(2, rng, False), draw_textures(2, rng, True)])},
    "demo-detection": {
        "name": "Demo · shape detection", "task": "object_detection", "class_names": SCENE_CLASSES,
        "train": (functools.partial(train_rcnn, architecture="fasterrcnn_resnet18_fpn"),), "val": valsets.scenes_coco,
        "samples": lambda rng: draw_scenes(4, rng)[0]},
    "demo-instance-segmentation": {
        "name": "Demo · shape instance segmentation", "task": "instance_segmentation", "class_names": SCENE_CLASSES,
        "train": (functools.partial(train_rcnn, architecture="maskrcnn_resnet18_fpn"),), "val": valsets.scenes_coco,
        "samples": lambda rng: draw_scenes(4, rng)[0]},
    "demo-segmentation": {
        "name": "Demo · shape segmentation", "task": "segmentation", "class_names": SCENE_CLASSES,
        "train": (train_segmenter,), "val": valsets.scenes_masks, "samples": lambda rng: draw_scenes(4, rng)[0]},
    "demo-oriented": {
        "name": "Demo · oriented plates", "task": "oriented_object_detection", "class_names": list(PLATES),
        "train": (train_oriented,), "val": valsets.plates_dota, "samples": lambda rng: draw_plates(4, rng)[0]},
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
    write_experiment_json(folder, experiment_id=trained.id, name=trained.name, project_id=project_id, task=task,
                          model=model, metrics={k: round(v, 6) for k, v in trained.metrics.items()},
                          status="completed", checkpoints=checkpoints)


def build_project(root: Path, project_id: str, seed: int = 0) -> Path:
    """Train and write one demo project atomically (built aside, then renamed into place)."""
    spec = DEMO_PROJECTS[project_id]
    rng = np.random.default_rng(seed)
    final = root / "projects" / project_id
    tmp = root / "projects" / f".building-{project_id}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "data" / "samples").mkdir(parents=True)
    extra = {"class_names": spec["class_names"]} if "class_names" in spec else {}
    write_project_json(tmp, project_id, spec["name"], spec["task"], **extra)
    for i, image in enumerate(spec["samples"](rng)):
        save_png(image, tmp / "data" / "samples" / f"sample_{i}.png")
    spec["val"](tmp / "data" / "val", np.random.default_rng(VAL_SEED + seed))  # held out: its own stream
    for train in spec["train"]:
        trained = train(rng)
        _write_experiment(tmp / "experiments" / trained.id, project_id, spec["task"], trained)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


def build_demo(root: str | os.PathLike[str], *, force: bool = False, progress: Progress | None = None,
               projects: list[str] | None = None, seed: int = 0, threads: int | None = None) -> list[str]:
    """Build every demo project that is missing (all of them with ``force``).

    ``projects`` (default: ``$AISTUDIO_DEMO_PROJECTS``, comma-separated, else all) limits which. ``seed``
    (0: the demo the README's figures come from) seeds the weights and every project's scenes; ``threads``
    trains on that many threads (default: PyTorch's) — both move the trained weights, as another CPU does,
    which ``make test-other-demo`` uses to prove the tests do not depend on where a model lands.

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
    torch.manual_seed(seed)
    root = Path(root)
    built = []
    todo = [p for p in DEMO_PROJECTS
            if p in chosen and (force or not (root / "projects" / p / "project.json").is_file())]
    for i, project_id in enumerate(todo):
        if progress:
            progress(f"Training {project_id}", i / max(len(todo), 1))
        start = time.perf_counter()
        previous = torch.get_num_threads()
        torch.set_num_threads(threads or previous)
        try:
            build_project(root, project_id, seed=seed * 1000 + i)
        finally:
            torch.set_num_threads(previous)
        built.append(project_id)
        if progress:
            progress(f"Built {project_id} in {time.perf_counter() - start:.0f}s", (i + 1) / len(todo))
    return built
