"""A task: torch-free ``TaskTraits`` that the UI, the API and request checks read, and the
torch-side ``Task`` methods that build, wrap and compare its models.

Task modules import torch only inside methods, so ``get_task(name).traits`` stays cheap.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from exporter.errors import ArchitectureError
from exporter.options import OptionSpec

if TYPE_CHECKING:
    from pathlib import Path

    import numpy as np
    from PIL import Image
    from torch import nn

    from exporter.datasets import ValSet
    from exporter.models.spec import ModelSpec
    from exporter.tasks.agreement import Pair, TaskCheck
    from exporter.tasks.metrics import Score

Prediction = dict[str, "np.ndarray"]  # one image's outputs, by output name
# Metrics every task may report, in words (a task's ``metric_names`` overrides or adds): what pages, the CLI and
# verdicts print instead of keys.
METRIC_NAMES = {
    "top1_accuracy": "top-1 accuracy", "top5_accuracy": "top-5 accuracy", "mae": "MAE", "rmse": "RMSE", "r2": "R²",
    "image_auroc": "image AUROC", "pixel_auroc": "pixel AUROC", "f1": "F1", "miou": "mIoU",
    "pixel_accuracy": "pixel accuracy", "map": "COCO mAP@[.5:.95]", "map_50": "mAP@.5",
    "mask_map": "mask mAP@[.5:.95]", "mask_map_50": "mask mAP@.5", "box_map": "box mAP@[.5:.95]",
    "box_map_50": "box mAP@.5",
    # task agreement of the file with PyTorch (validation)
    "top1_agreement": "top-1 agreement", "pixel_agreement": "pixel agreement", "match_rate": "detections matched",
    # what training logged in experiment.json (the demo's and Lightning's usual names)
    "val_acc": "validation accuracy", "val_accuracy": "validation accuracy", "val_loss": "validation loss",
    "val_auroc": "validation AUROC", "val_mae": "validation MAE", "val_map": "validation mAP",
    "val_map_50": "validation mAP@.5", "val_miou": "validation mIoU", "train_loss": "training loss",
}


def metric_name(key: str) -> str:
    """A metric key in words: the shared vocabulary, else the key with spaces."""
    return METRIC_NAMES.get(key) or key.replace("_", " ")



@dataclass(frozen=True)
class TaskTraits:
    """What is known about a task without loading a model.

    ``needs`` names what its exported graphs need in the vocabulary of ``exporter.capabilities`` (NMS, RoIAlign,
    data-dependent loops, …): a format that cannot carry one of them refuses the task, saying which operator.
    """

    name: str
    outputs: tuple[str, ...]
    options: tuple[OptionSpec, ...] = ()
    min_opset: int = 0
    min_opset_ops: str = ""  # the ops that need ``min_opset``, for the refusal message
    needs: frozenset[str] = frozenset()
    tolerance_factor: float = 1.0  # default validation tolerance × this (long graphs drift more)
    detectable: bool = False  # architectures can be recognised from a state dict's keys and shapes
    primary_metric: str = ""  # what evaluation on a labelled set gates on
    val_layout: str = ""  # the labelled set's layout in data/val/, in one line
    higher_is_better: bool = True
    label: str = ""  # the task in words ("object detection"); default: its name with spaces
    metric_names: Mapping[str, str] = field(default_factory=dict)  # metric key → its name in words

    @property
    def display_name(self) -> str:
        """The task in words, for every page and the CLI."""
        return self.label or self.name.replace("_", " ")

    def metric_name(self, key: str) -> str:
        """A metric's name in words ("top-1 accuracy"): the task's own, else the shared vocabulary."""
        return self.metric_names.get(key) or metric_name(key)


class Task:
    """Base of every task; subclasses set ``traits`` and implement ``architectures``/``build``/``wrap``."""

    traits: ClassVar[TaskTraits]
    input_names: ClassVar[tuple[str, ...]] = ("input",)
    input_normalization: ClassVar[dict[str, list[float]] | None] = None  # set: the graph normalises itself

    @property
    def name(self) -> str:
        return self.traits.name

    def architectures(self) -> list[str]:
        """Architecture names this task can build."""
        raise NotImplementedError

    def build(self, spec: ModelSpec) -> nn.Module:
        """The module whose ``state_dict`` the checkpoint holds (random init)."""
        raise NotImplementedError

    def wrap(self, model: nn.Module, spec: ModelSpec, options: dict[str, Any] | None = None) -> nn.Module:
        """An eval-mode module returning a tuple of tensors in ``outputs(options)`` order."""
        raise NotImplementedError

    def outputs(self, options: dict[str, Any]) -> tuple[str, ...]:
        """Output names for these options (segmentation names its output ``mask`` or ``logits``)."""
        return self.traits.outputs

    def compare(self, pairs: list[Pair], output_names: tuple[str, ...], tolerance: float, n_samples: int,
                settings: dict[str, Any]) -> TaskCheck | None:
        """The task's own comparison of PyTorch and the file, or ``None`` to compare tensor by tensor."""
        return None

    def agreement(self, pairs: list[Pair]) -> dict[str, float]:
        """Task-level agreement metrics of PyTorch and the file (e.g. top-1 agreement)."""
        return {}

    def usage_lines(self, model: dict[str, Any], outputs: list[str]) -> list[str]:
        """Lines of the "Run it" snippet that read the outputs (named ``outputs``) as the task's answer."""
        return []

    # -- evaluation on a labelled set (``exporter.evaluation``) --------------------------------
    def read_val_set(self, folder: Path, spec: ModelSpec) -> ValSet:
        """Read and check ``data/val`` in this task's standard layout.

        Raises:
            DatasetError: the layout is not the task's, or a file in it is broken.
        """
        from exporter.errors import DatasetError

        raise DatasetError(f"{self.name} models have no labelled-set layout to evaluate on.")

    def split_outputs(self, outputs: dict[str, np.ndarray]) -> list[Prediction]:
        """A batch's outputs as one prediction per image (padded detections are cut to their count)."""
        rows = len(next(iter(outputs.values())))
        return [{name: value[i] for name, value in outputs.items()} for i in range(rows)]

    def calibrate(self, reference: list[Prediction], valset: ValSet, spec: ModelSpec | None = None) -> dict[str, float]:
        """Settings derived from PyTorch's predictions (or the model's own, in ``spec``) and applied to both (an
        anomaly threshold)."""
        return {}

    def score(self, predictions: list[Prediction], valset: ValSet, spec: ModelSpec,
              calibration: dict[str, float]) -> Score:
        """The task's metrics of ``predictions`` against the set's targets, primary metric first."""
        raise NotImplementedError

    def at_chance(self, metrics: dict[str, float], spec: ModelSpec) -> bool:
        """True when PyTorch itself scores no better than guessing (a drop then means nothing)."""
        return False

    def disagreement(self, reference: Prediction, exported: Prediction, calibration: dict[str, float]) -> float:
        """How differently PyTorch and the file answer on one image (0 = the same answer)."""
        return 0.0

    def draw(self, image: Image.Image, prediction: Prediction, spec: ModelSpec, calibration: dict[str, float]) -> None:
        """Draw one prediction onto ``image`` (the input resized to the model's size), for the gallery."""

    def check_architecture(self, architecture: str) -> None:
        """Raise ``ArchitectureError`` naming close matches when the name is unknown."""
        known = self.architectures()
        if architecture not in known:
            near = difflib.get_close_matches(architecture, known, n=4) or known[:6]
            raise ArchitectureError(
                f"Unknown architecture {architecture!r} for task {self.name!r}; "
                f"did you mean one of: {', '.join(near)}?", stage="build")
