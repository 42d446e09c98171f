"""Object detection: image → padded ``boxes [B, D, 4]``, ``scores``, ``labels``, ``num_detections``
(torchvision detectors with NMS inside the graph)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np

from exporter import capabilities, datasets
from exporter.errors import ArchitectureError
from exporter.models.spec import IDENTITY_NORMALIZATION
from exporter.options import OptionSpec
from exporter.tasks import agreement, drawing, metrics
from exporter.tasks.base import Prediction, Task, TaskTraits
from exporter.tasks.registry import register_task

if TYPE_CHECKING:
    from pathlib import Path

    from PIL import Image
    from torch import nn

    from exporter.datasets import ValSet
    from exporter.models.spec import ModelSpec

DETECTION_OUTPUTS = ("boxes", "scores", "labels", "num_detections")
DETECTION_OPTIONS = (
    OptionSpec("max_detections", "int", 100, "Detections kept per image (outputs are padded to this).",
               minimum=1, maximum=1000, label="Detections per image, at most"),
    OptionSpec("score_threshold", "float", None,
               "Drop detections scoring at or below this; default: the model's own setting.",
               minimum=0.0, maximum=1.0, label="Score threshold (0–1)", advanced=True),
    OptionSpec("iou_threshold", "float", None,
               "NMS IoU threshold per class; default: the model's own setting.", minimum=0.0, maximum=1.0,
               label="NMS IoU threshold (0–1)", advanced=True),
)
# Two-stage detectors only (R-CNN): how many region proposals reach the RoI heads, the lever on their speed
PROPOSAL_OPTIONS = (
    OptionSpec("proposals", "int", None,
               "Region proposals per image for an R-CNN's RoI heads (the RPN's top-N before and after its NMS); "
               "fewer run faster and may find less: the labelled set says how much. Default: the model's own "
               "(torchvision: 1000).", minimum=1, maximum=10000, label="R-CNN proposals per image", advanced=True),
)
# Lowest ONNX opset with every op the wrapped graph needs.
DETECTION_OPSET, DETECTION_OPS = 11, "NonMaxSuppression, RoiAlign, TopK with a dynamic k"
# Scores pass through softmax/sigmoid after thousands of ops; FINDINGS measured 2e-4 between
# ORT and eager, so default tolerances are scaled up for detection.
DETECTION_TOLERANCE_FACTOR = 10.0
# torchvision's post-processing in the graph: NMS over RoIAlign'd proposals, a data-dependent number of detections
DETECTION_NEEDS = frozenset({capabilities.NMS, capabilities.ROI_ALIGN, capabilities.DATA_DEPENDENT_SHAPE})
COCO_LAYOUT = "COCO: images/* + annotations.json (categories named as the model's classes)"


def detection_traits(name: str, outputs: tuple[str, ...], options: tuple[OptionSpec, ...],
                     needs: frozenset[str] = DETECTION_NEEDS, primary_metric: str = "map",
                     val_layout: str = COCO_LAYOUT, label: str = "",
                     metric_names: dict[str, str] | None = None) -> TaskTraits:
    """Traits every padded-detection task shares."""
    return TaskTraits(name, outputs=outputs, options=options, min_opset=DETECTION_OPSET,
                      min_opset_ops=DETECTION_OPS, tolerance_factor=DETECTION_TOLERANCE_FACTOR,
                      needs=needs, primary_metric=primary_metric,
                      val_layout=val_layout, label=label, metric_names=metric_names or {})


def detection_usage(model: dict[str, Any], rotated: bool) -> list[str]:
    """Snippet lines that print each detection of the first image."""
    box = "(cx, cy, w, h, angle in radians)" if rotated else "(x1, y1, x2, y2)"
    return [f"class_names = {json.dumps(model.get('class_names') or [])}",
            "n = int(num_detections[0])  # outputs are padded to max_detections",
            "for box, score, label in zip(boxes[0][:n], scores[0][:n], labels[0][:n]):",
            f"    print(class_names[label], round(float(score), 3), box.round(1))  # box {box}"]


@register_task
class ObjectDetectionTask(Task):
    """torchvision detectors; detections matched by label and IoU for validation."""

    traits = detection_traits("object_detection", DETECTION_OUTPUTS, DETECTION_OPTIONS + PROPOSAL_OPTIONS)
    input_normalization = IDENTITY_NORMALIZATION
    rotated = False

    def architectures(self) -> list[str]:
        from exporter.models.detection import COMPOSED, torchvision_detectors

        names = [n for n in torchvision_detectors() if not n.startswith(("maskrcnn", "keypointrcnn"))]
        return names + [n for n in COMPOSED if n.startswith("fasterrcnn")]

    def build(self, spec: ModelSpec) -> nn.Module:
        from exporter.models.detection import build_detector

        self.check_architecture(spec.architecture)
        if not spec.num_classes or spec.num_classes < 2:
            raise ArchitectureError(f"{self.name} needs num_classes ≥ 2 (torchvision counts the background "
                                    "class for R-CNN and SSD).", stage="build")
        return build_detector(spec.architecture, spec.num_classes, spec.input_size)

    def wrap(self, model: nn.Module, spec: ModelSpec, options: dict[str, Any] | None = None) -> nn.Module:
        from exporter.models.detection import DetectionOutputs

        return DetectionOutputs(model, spec.input_size, options or {}).eval()

    def compare(self, pairs: list[agreement.Pair], output_names: tuple[str, ...], tolerance: float, n_samples: int,
                settings: dict[str, Any]) -> agreement.TaskCheck:
        return agreement.detections(pairs, output_names, tolerance, n_samples, settings, rotated=self.rotated)

    def usage_lines(self, model: dict[str, Any], outputs: list[str]) -> list[str]:
        return detection_usage(model, self.rotated)

    def read_val_set(self, folder: Path, spec: ModelSpec) -> ValSet:
        return datasets.coco(folder, list(spec.class_names), with_masks="masks" in self.traits.outputs)

    def split_outputs(self, outputs: dict[str, np.ndarray]) -> list[Prediction]:
        counts = outputs["num_detections"].astype(int)
        return [{name: value[i][:counts[i]] for name, value in outputs.items() if name != "num_detections"}
                for i in range(len(counts))]

    def score(self, predictions: list[Prediction], valset: ValSet, spec: ModelSpec,
              calibration: dict[str, float]) -> metrics.Score:
        targets = [scale_target(t, spec.input_size) for t in valset.targets]
        return metrics.coco([binary_masks(p) for p in predictions], targets, list(spec.class_names),
                            with_masks="masks" in self.traits.outputs)

    def at_chance(self, values: dict[str, float], spec: ModelSpec) -> bool:
        return values[self.traits.primary_metric] <= 0.01

    def disagreement(self, reference: Prediction, exported: Prediction, calibration: dict[str, float]) -> float:
        """Detections (score ≥ 0.5) that have no counterpart at IoU ≥ 0.5 on the other side."""
        ref, out = _confident(reference), _confident(exported)
        matched = len(agreement.match_detections(ref, out, self.rotated))
        return float(len(ref["scores"]) + len(out["scores"]) - 2 * matched)

    def draw(self, image: Image.Image, prediction: Prediction, spec: ModelSpec, calibration: dict[str, float]) -> None:
        """The confident detections (score ≥ 0.5): masks tinted, boxes (rotated ones as polygons) named."""
        from exporter.geometry import rotated_corners

        keep = prediction["scores"] >= 0.5
        labels = prediction["labels"][keep]
        if "masks" in prediction:
            drawing.masks(image, prediction["masks"][keep], labels)
        if self.rotated:
            drawing.polygons(image, rotated_corners(prediction["boxes"][keep]), labels, spec.class_names)
        else:
            drawing.boxes(image, prediction["boxes"][keep], labels, spec.class_names)
        drawing.caption(image, f"{int(keep.sum())} detection" + ("" if keep.sum() == 1 else "s"))


def _confident(prediction: Prediction, threshold: float = 0.5) -> Prediction:
    keep = prediction["scores"] >= threshold
    return {k: v[keep] for k, v in prediction.items() if k in ("boxes", "scores", "labels")}


def binary_masks(prediction: Prediction, threshold: float = 0.5) -> Prediction:
    """Masks as 0/1 (probability masks thresholded at 0.5)."""
    if "masks" not in prediction or prediction["masks"].dtype == np.uint8:
        return prediction
    return {**prediction, "masks": (prediction["masks"] >= threshold).astype(np.uint8)}


def scale_target(target: dict[str, Any], input_size: tuple[int, int, int]) -> dict[str, Any]:
    """A target in the model's input pixels (images are resized to the input size before inference)."""
    width, height = target["size"]
    sx, sy = input_size[2] / width, input_size[1] / height
    if sx == 1 and sy == 1:
        return target
    boxes = target["boxes"].astype(np.float32).copy()
    if boxes.shape[1] == 4:
        boxes *= np.array([sx, sy, sx, sy], np.float32)
    else:  # (cx, cy, w, h, θ): exact for uniform scaling
        boxes[:, :4] *= np.array([sx, sy, (sx + sy) / 2, (sx + sy) / 2], np.float32)
    scaled = {**target, "boxes": boxes}
    if "masks" in target and len(target["masks"]):
        from PIL import Image

        scaled["masks"] = np.stack([np.asarray(Image.fromarray(m).resize((input_size[2], input_size[1]),
                                                                         Image.NEAREST)) for m in target["masks"]])
    return scaled
