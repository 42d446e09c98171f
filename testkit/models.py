"""Checkpoints written the way training writes them: projects, experiments and lively random weights."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn


def lively_init(model: nn.Module, seed: int = 0, gain: float = 1.0) -> nn.Module:
    """Re-initialise weights so a random net gives varied, non-degenerate outputs.

    torchvision zero-initialises some heads (ViT) and tiny random nets can output ~1e-9;
    validation would rightly call those inconclusive. ``gain`` scales He-normal weights: deep
    nets with squeeze-excitation (efficientnet_v2_s) amplify float32 rounding from ~0.9 on.
    """
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, (nn.Conv2d, nn.Linear)) and weight is not None:
            fan_in = weight[0].numel()
            with torch.no_grad():
                weight.copy_(torch.randn(weight.shape, generator=gen) * math.sqrt(2.0 / fan_in) * gain)
                if module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.1)
    return model


def write_project(root: Path, project_id: str = "proj", task: str = "classification") -> Path:
    folder = Path(root) / "projects" / project_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "project.json").write_text(json.dumps({"id": project_id, "name": project_id, "task": task}))
    return folder


def write_experiment(root: Path, state_dict: dict[str, Any] | Any, *, project_id: str = "proj",
                     experiment_id: str = "exp", hparams: dict[str, Any] | None = None,
                     model_meta: dict[str, Any] | None = None, task: str = "classification",
                     raw_bytes: bytes | None = None, wrap: str = "lightning") -> Path:
    """A project + experiment whose ``best.ckpt`` holds ``state_dict`` (or ``raw_bytes``)."""
    project = write_project(root, project_id, task)
    folder = project / "experiments" / experiment_id
    (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
    path = folder / "checkpoints" / "best.ckpt"
    if raw_bytes is not None:
        path.write_bytes(raw_bytes)
    elif wrap == "lightning":
        torch.save({"state_dict": state_dict, "hyper_parameters": hparams or {}, "epoch": 1,
                    "global_step": 10}, path)
    else:
        torch.save(state_dict, path)
    meta = {"id": experiment_id, "name": experiment_id, "project_id": project_id, "task": task,
            "model": model_meta or {}, "checkpoints": {"best": {"path": "checkpoints/best.ckpt", "epoch": 1}}}
    (folder / "experiment.json").write_text(json.dumps(meta))
    return path


def classifier_checkpoint(root: Path, architecture: str = "resnet18", num_classes: int = 5,
                          size: int = 64, prefix: str = "model.", gain: float = 1.0, **kwargs: Any) -> Path:
    """A Lightning-style checkpoint of a torchvision classifier with lively random weights."""
    from exporter.models.classification import build_torchvision_classifier

    model = lively_init(build_torchvision_classifier(architecture, num_classes, (3, size, size)), gain=gain)
    hparams = {"task": "classification", "architecture": architecture, "num_classes": num_classes,
               "input_size": [3, size, size], **kwargs.pop("hparams", {})}
    state = {f"{prefix}{k}": v for k, v in model.state_dict().items()}
    return write_experiment(root, state, hparams=hparams, **kwargs)
