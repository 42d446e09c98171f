"""What the exporter needs to know about a model, resolved from checkpoint and experiment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from exporter.errors import ArchitectureError

IMAGENET_NORMALIZATION = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
IDENTITY_NORMALIZATION = {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}  # graphs that normalise themselves


@dataclass(frozen=True)
class ModelSpec:
    """Task, architecture and I/O facts of one trained model.

    ``hyper_parameters`` of the checkpoint win; ``experiment.json["model"]`` fills the gaps.
    """

    task: str
    architecture: str
    num_classes: int | None = None
    input_size: tuple[int, int, int] = (3, 224, 224)
    class_names: tuple[str, ...] = ()
    normalization: dict[str, list[float]] = field(default_factory=lambda: dict(IMAGENET_NORMALIZATION))
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def resolve(cls, hyper_parameters: Mapping[str, Any], fallback: Mapping[str, Any],
                task_hint: str | None = None) -> ModelSpec:
        """Merge checkpoint hyper-parameters over the experiment's model description.

        Raises:
            ArchitectureError: no task or architecture can be found in either source.
        """
        merged = {**dict(fallback), **{k: v for k, v in hyper_parameters.items() if v is not None}}
        task = merged.get("task") or task_hint
        arch = merged.get("architecture") or merged.get("arch") or merged.get("model_name")
        if not task or not arch:
            raise ArchitectureError(
                "The checkpoint names no task/architecture and experiment.json has none either; "
                "add 'task' and 'architecture' to its hyper_parameters or experiment.json 'model'.",
                stage="build")
        num = merged.get("num_classes", merged.get("num_outputs"))
        size = merged.get("input_size") or merged.get("image_size") or (3, 224, 224)
        norm = merged.get("normalization")
        known = {"task", "architecture", "arch", "model_name", "num_classes", "num_outputs",
                 "input_size", "image_size", "class_names", "normalization"}
        return cls(
            task=str(task),
            architecture=str(arch),
            num_classes=int(num) if num is not None else None,
            input_size=_input_size(size),
            class_names=tuple(str(c) for c in merged.get("class_names") or ()),
            normalization=norm if _valid_norm(norm) else dict(IMAGENET_NORMALIZATION),
            extra={k: v for k, v in merged.items() if k not in known},
        )

    def metadata(self) -> dict[str, Any]:
        """The JSON-able description carried into exported files and records."""
        described = {"task": self.task, "architecture": self.architecture,
                     "num_classes": self.num_classes, "input_size": list(self.input_size),
                     "class_names": list(self.class_names), "normalization": self.normalization}
        if self.extra.get("threshold") is not None:  # the model's own decision threshold (anomalib's, normalised)
            described["threshold"] = float(self.extra["threshold"])
        if self.extra.get("fixed_batch"):  # a program that takes only this batch size
            described["fixed_batch"] = int(self.extra["fixed_batch"])
        if isinstance(code := self.extra.get("model_code"), dict):  # the user's own model code (code/<Class>)
            described["code_sha256"] = code.get("sha256")
        return described


def _input_size(value: Any) -> tuple[int, int, int]:
    if isinstance(value, int):
        return (3, value, value)
    dims = [int(v) for v in value]
    if len(dims) == 2:
        dims = [3, *dims]
    if len(dims) != 3 or min(dims) <= 0:
        raise ArchitectureError(f"input_size {value!r} must be [C, H, W] with positive sizes.",
                                stage="build")
    return (dims[0], dims[1], dims[2])


def _valid_norm(norm: Any) -> bool:
    return (isinstance(norm, dict) and isinstance(norm.get("mean"), list)
            and isinstance(norm.get("std"), list) and len(norm["mean"]) == len(norm["std"]))
