"""Instance segmentation: the detection outputs plus ``masks [B, D, H, W]`` (torchvision Mask R-CNN)."""

from __future__ import annotations

from exporter import capabilities
from exporter.options import OptionSpec
from exporter.tasks.object_detection import (
    DETECTION_NEEDS,
    DETECTION_OPTIONS,
    DETECTION_OUTPUTS,
    PROPOSAL_OPTIONS,
    ObjectDetectionTask,
    detection_traits,
)
from exporter.tasks.registry import register_task

MASK_OPTIONS = (
    OptionSpec("masks", "choice", "binary",
               "binary: uint8 masks thresholded in the graph; probability: float masks in [0, 1].",
               choices=("binary", "probability"), label="Mask output"),
    OptionSpec("mask_threshold", "float", 0.5, "Probability at or above which a pixel is in the mask.",
               minimum=0.0, maximum=1.0, label="Mask threshold (0–1)", advanced=True,
               applies_when=(("masks", ("binary",)),)),
)


@register_task
class InstanceSegmentationTask(ObjectDetectionTask):
    """Mask R-CNN; masks compared by IoU per matched detection."""

    traits = detection_traits("instance_segmentation", (*DETECTION_OUTPUTS, "masks"),
                              DETECTION_OPTIONS + PROPOSAL_OPTIONS + MASK_OPTIONS,
                              needs=DETECTION_NEEDS | {capabilities.DATA_DEPENDENT_LOOP},  # pasting the masks
                              primary_metric="mask_map",
                              label="instance segmentation")

    def architectures(self) -> list[str]:
        from exporter.models.detection import COMPOSED, torchvision_detectors

        return [n for n in torchvision_detectors() if n.startswith("maskrcnn")] + [
            n for n in COMPOSED if n.startswith("maskrcnn")]
