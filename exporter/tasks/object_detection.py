"""Object detection: image → padded ``boxes [B, D, 4]``, ``scores``, ``labels``, ``num_detections``
(torchvision detectors with NMS inside the graph)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from exporter.errors import ArchitectureError
from exporter.models.spec import IDENTITY_NORMALIZATION
from exporter.options import OptionSpec
from exporter.tasks import compare
from exporter.tasks.base import Task, TaskTraits
from exporter.tasks.registry import register_task

if TYPE_CHECKING:
    from torch import nn

    from exporter.models.spec import ModelSpec

DETECTION_OUTPUTS = ("boxes", "scores", "labels", "num_detections")
DETECTION_OPTIONS = (
    OptionSpec("max_detections", "int", 100, "Detections kept per image (outputs are padded to this).",
               minimum=1, maximum=1000),
    OptionSpec("score_threshold", "float", None,
               "Drop detections scoring at or below this; default: the model's own setting.",
               minimum=0.0, maximum=1.0),
    OptionSpec("iou_threshold", "float", None,
               "NMS IoU threshold per class; default: the model's own setting.", minimum=0.0, maximum=1.0),
)
# Lowest ONNX opset with every op the wrapped graph needs.
DETECTION_OPSET, DETECTION_OPS = 11, "NonMaxSuppression, RoiAlign, TopK with a dynamic k"
# Scores pass through softmax/sigmoid after thousands of ops; FINDINGS measured 2e-4 between
# ORT and eager, so default tolerances are scaled up for detection.
DETECTION_TOLERANCE_FACTOR = 10.0
FP16_NMS = ("onnxconverter-common retypes the Cast nodes around the in-graph NMS and the file no longer "
            "loads")


def detection_traits(name: str, outputs: tuple[str, ...], options: tuple[OptionSpec, ...],
                     refuses: dict[str, str] | None = None) -> TaskTraits:
    """Traits every padded-detection task shares."""
    return TaskTraits(name, outputs=outputs, options=options, min_opset=DETECTION_OPSET,
                      min_opset_ops=DETECTION_OPS, tolerance_factor=DETECTION_TOLERANCE_FACTOR,
                      refuses={"precision=fp16": FP16_NMS, **(refuses or {})})


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

    traits = detection_traits("object_detection", DETECTION_OUTPUTS, DETECTION_OPTIONS)
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

    def compare(self, pairs: list[compare.Pair], output_names: tuple[str, ...], tolerance: float, n_samples: int,
                settings: dict[str, Any]) -> compare.TaskCheck:
        return compare.detections(pairs, output_names, tolerance, n_samples, settings, rotated=self.rotated)

    def usage_lines(self, model: dict[str, Any], outputs: list[str]) -> list[str]:
        return detection_usage(model, self.rotated)
