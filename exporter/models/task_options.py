"""Options each task adds to every format's options, declared without importing torch.

The dashboard, the API and ``prepare_export`` read these in processes that never load a
model; the task adapters (which import torch) point at the same tuples.
"""

from __future__ import annotations

from exporter.options import OptionSpec

DETECTION_OPTIONS = (
    OptionSpec("max_detections", "int", 100, "Detections kept per image (outputs are padded to this).",
               minimum=1, maximum=1000),
    OptionSpec("score_threshold", "float", None,
               "Drop detections scoring at or below this; default: the model's own setting.",
               minimum=0.0, maximum=1.0),
    OptionSpec("iou_threshold", "float", None,
               "NMS IoU threshold per class; default: the model's own setting.", minimum=0.0, maximum=1.0),
)
MASK_OPTIONS = (
    OptionSpec("masks", "choice", "binary",
               "binary: uint8 masks thresholded in the graph; probability: float masks in [0, 1].",
               choices=("binary", "probability")),
    OptionSpec("mask_threshold", "float", 0.5, "Probability at or above which a pixel is in the mask.",
               minimum=0.0, maximum=1.0),
)
SEGMENTATION_OPTIONS = (
    OptionSpec("output", "choice", "logits",
               "logits: [B, C, H, W] scores; mask: [B, H, W] uint8 class ids (argmax in the graph).",
               choices=("logits", "mask")),
    OptionSpec("resolution", "choice", "input",
               "input: outputs at the input size; stride: the classifier's native (smaller) output.",
               choices=("input", "stride")),
)
BUILTIN_TASKS = ("classification", "regression", "anomaly_detection", "object_detection",
                 "oriented_object_detection", "segmentation", "instance_segmentation")
TASK_OPTIONS: dict[str, tuple[OptionSpec, ...]] = {
    "object_detection": DETECTION_OPTIONS,
    "oriented_object_detection": DETECTION_OPTIONS,
    "instance_segmentation": DETECTION_OPTIONS + MASK_OPTIONS,
    "segmentation": SEGMENTATION_OPTIONS,
}
# Lowest ONNX opset with every op the wrapped graph needs (NonMaxSuppression, RoiAlign, TopK with
# a k input, Loop over masks).
MIN_OPSET: dict[str, int] = {"object_detection": 11, "instance_segmentation": 11,
                             "oriented_object_detection": 11}


def task_option_specs(task: str | None) -> tuple[OptionSpec, ...]:
    """The options ``task`` adds (none for classification, regression, anomaly detection)."""
    return TASK_OPTIONS.get(task or "", ())
