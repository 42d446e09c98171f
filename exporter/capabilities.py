"""What an exported graph needs, in one vocabulary shared by tasks and formats.

A task (or a model family) declares the operators and graph features its exported graphs need
(``TaskTraits.needs``); a format declares which of them it cannot carry, each with the reason naming the operator
it lacks (``ExportFormat.cannot``). A format refuses a task when they meet — so a new task or an imported detector
that uses NMS is refused by every format without NMS, with no format file edited.
"""

from __future__ import annotations

NMS = "nms"  # torchvision::nms: a data-dependent number of kept boxes
ROI_ALIGN = "roi_align"  # torchvision::roi_align: crops of candidate boxes
DATA_DEPENDENT_SHAPE = "data_dependent_shape"  # outputs sized by the data (aten::Int of a data-dependent tensor)
DATA_DEPENDENT_LOOP = "data_dependent_loop"  # a loop over a data-dependent count (pasting one mask per detection)
TOPK_GATHER = "topk_gather"  # torch.topk / torch.gather
TORCHSCRIPT_PROGRAM = "torchscript_program"  # an imported TorchScript module: torch.export cannot trace it
SLICE_UPDATE = "slice_update"  # an in-place update of part of a tensor (Conditional DETR's reference points)
DEFORMABLE_ATTENTION = "deformable_attention"  # Mask2Former's pixel decoder
SELECT = "select"  # comparisons and element-wise selection (anomalib's normalisation)

CAPABILITIES = {
    NMS: "non-maximum suppression (torchvision::nms)",
    ROI_ALIGN: "RoIAlign (torchvision::roi_align)",
    DATA_DEPENDENT_SHAPE: "outputs whose size depends on the data",
    DATA_DEPENDENT_LOOP: "a loop over a data-dependent count",
    TOPK_GATHER: "TopK and Gather (torch.topk, torch.gather)",
    TORCHSCRIPT_PROGRAM: "a TorchScript program (torch.jit), which torch.export cannot trace",
    SLICE_UPDATE: "an in-place update of part of a tensor (x[..., :2] += y)",
    DEFORMABLE_ATTENTION: "multi-scale deformable attention (Mask2Former's pixel decoder: reference-point grids, "
                          "grid_sample over feature levels)",
    SELECT: "comparisons and element-wise selection (torch.gt, torch.lt, torch.where)",
}
# What every format made with torch.export says to a TorchScript source.
NO_TORCHSCRIPT = ("the file is made with torch.export, which cannot trace a TorchScript program: import the model as a "
                  ".pt2 (torch.export.save) or with its code (--model-code)")


def refusal(needs: frozenset[str] | set[str], cannot: dict[str, str]) -> str:
    """Why a format that ``cannot`` carry some capabilities refuses a graph that ``needs`` others ("" when it
    carries all): each distinct reason once, in the vocabulary's order."""
    reasons = [cannot[c] for c in CAPABILITIES if c in needs and c in cannot]
    return "; ".join(dict.fromkeys(reasons))
