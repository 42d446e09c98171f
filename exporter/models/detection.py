"""Object detection and instance segmentation on torchvision detectors, NMS inside the graph.

torchvision's detectors post-process image by image in Python loops, which a trace freezes
at one image (docs/findings.md: every legacy ONNX detector fails at batch 2). The wrappers here
reuse each model's own modules (backbone, heads, anchors, box coders, RoI pooling, mask
paste) and replace only those loops with batched tensor code: top-k per level and image,
score threshold, greedy NMS per (image, label), padded outputs (``postprocess.py``).

The graph takes images already resized to ``input_shape`` with values in [0, 1]; it
normalises with the model's own mean/std. At that size torchvision's resize is the identity,
so the wrapper returns what ``model(images)`` returns — a test checks it family by family.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - torch convention
from torch import nn

from exporter.errors import ArchitectureError
from exporter.models.postprocess import flat_candidates, nms_padded, scatter_rows

DETECTION_OUTPUTS = ("boxes", "scores", "labels", "num_detections")

# Our own compositions of torchvision parts: a resnet18 FPN with 64 channels and a slim box head
# (torchvision's R-CNN classes, light enough to train on a CPU for the demo and tests).
COMPOSED = ("fasterrcnn_resnet18_fpn", "maskrcnn_resnet18_fpn")
LITE_CHANNELS = 64


@functools.cache
def torchvision_detectors() -> tuple[str, ...]:
    """torchvision detection builder names (fasterrcnn_*, retinanet_*, ssd*, fcos_*, maskrcnn_*)."""
    import torchvision

    return tuple(torchvision.models.list_models(module=torchvision.models.detection))


def build_detector(architecture: str, num_classes: int, input_size: tuple[int, int, int]) -> nn.Module:
    """A torchvision detector with random weights, its transform fixed at ``input_size``."""
    from torchvision.models import detection

    _, h, w = input_size
    size_kwargs: dict[str, Any] = {} if architecture.startswith("ssd") else {
        "min_size": min(h, w), "max_size": max(h, w)}
    if architecture in COMPOSED:
        model = _composed(architecture, num_classes, size_kwargs)
    else:
        model = detection.__dict__[architecture](weights=None, weights_backbone=None,
                                                 num_classes=num_classes, **size_kwargs)
    if architecture.startswith("ssd"):
        model.transform.fixed_size = (h, w)
    return model


def _composed(architecture: str, num_classes: int, size_kwargs: dict[str, Any]) -> nn.Module:
    """``fasterrcnn_resnet18_fpn`` / ``maskrcnn_resnet18_fpn``: torchvision R-CNN on a lite FPN."""
    import torchvision
    from torchvision.models import detection
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    backbone = BackboneWithFPN(torchvision.models.resnet18(weights=None),
                               return_layers={"layer2": "0", "layer3": "1", "layer4": "2"},
                               in_channels_list=[128, 256, 512], out_channels=LITE_CHANNELS,
                               extra_blocks=LastLevelMaxPool())
    kwargs: dict[str, Any] = {
        "rpn_anchor_generator": detection.anchor_utils.AnchorGenerator(((16,), (32,), (64,), (128,)),
                                                                       ((0.5, 1.0, 2.0),) * 4),
        "box_head": TwoMLPHead(LITE_CHANNELS * 7 * 7, 256), "box_predictor": FastRCNNPredictor(256, num_classes),
        "rpn_batch_size_per_image": 128, "box_batch_size_per_image": 128, **size_kwargs}
    if architecture.startswith("maskrcnn"):
        kwargs.update(mask_head=MaskRCNNHeads(LITE_CHANNELS, [64, 64], 1),
                      mask_predictor=MaskRCNNPredictor(64, 64, num_classes))
        return detection.MaskRCNN(backbone, **kwargs)
    return detection.FasterRCNN(backbone, **kwargs)


def _family(model: nn.Module) -> str:
    from torchvision.models import detection

    for name, cls in (("rcnn", detection.generalized_rcnn.GeneralizedRCNN), ("retinanet", detection.RetinaNet),
                      ("fcos", detection.FCOS), ("ssd", detection.ssd.SSD)):
        if isinstance(model, cls):
            return name
    raise ArchitectureError(f"{type(model).__name__} is not a detector family this exporter knows.", stage="build")


def postprocess_settings(model: nn.Module, options: dict[str, Any]) -> dict[str, Any]:
    """Thresholds in effect: the user's options over the model's own attributes."""
    owner = model.roi_heads if hasattr(model, "roi_heads") else model
    return {"score_threshold": _pick(options.get("score_threshold"), owner.score_thresh),
            "iou_threshold": _pick(options.get("iou_threshold"), owner.nms_thresh),
            "max_detections": int(options.get("max_detections") or owner.detections_per_img)}


def _keep_proposals(model: nn.Module, family: str, count: int) -> None:
    """An R-CNN's RPN keeps ``count`` proposals per image at inference: its top-N per level before NMS (never more
    than the model's own) and in all after it.

    Raises:
        InvalidOptionError: the detector has no RPN (RetinaNet, FCOS, SSD score every anchor instead).
    """
    from exporter.errors import InvalidOptionError

    if family != "rcnn":
        raise InvalidOptionError(f"proposals applies to two-stage (R-CNN) detectors; {type(model).__name__} has no "
                                 "region proposal network — leave it empty.", stage="build")
    rpn = model.rpn
    rpn._pre_nms_top_n = {**rpn._pre_nms_top_n, "testing": min(count, rpn._pre_nms_top_n["testing"])}
    rpn._post_nms_top_n = {**rpn._post_nms_top_n, "testing": count}


def _pick(value: Any, default: Any) -> float:
    return float(default if value is None else value)


class DetectionOutputs(nn.Module):
    """Batched eval forward of a torchvision detector → padded boxes/scores/labels/num_detections
    (+ masks for Mask R-CNN)."""

    def __init__(self, model: nn.Module, input_size: tuple[int, int, int], options: dict[str, Any]) -> None:
        super().__init__()
        self.model = model.eval()
        self.family = _family(model)
        if options.get("proposals"):
            _keep_proposals(model, self.family, int(options["proposals"]))
        self.image_size = (input_size[1], input_size[2])
        settings = postprocess_settings(model, options)
        self.score_threshold = settings["score_threshold"]
        self.iou_threshold = settings["iou_threshold"]
        self.max_detections = settings["max_detections"]
        self.with_masks = getattr(getattr(model, "roi_heads", None), "has_mask", lambda: False)()
        self.binary_masks = options.get("masks", "binary") == "binary"
        self.mask_threshold = float(options.get("mask_threshold", 0.5))

    def forward(self, input: torch.Tensor) -> tuple[torch.Tensor, ...]:  # noqa: A002 - ONNX input name
        images = self._prepare(input)
        features = self.model.backbone(images)
        if isinstance(features, torch.Tensor):
            features = {"0": features}
        batch, boxes, scores, labels = getattr(self, f"_{self.family}")(images, features)
        out, kept, slot = nms_padded(boxes, scores, labels, batch, input, self.iou_threshold,
                                     self.max_detections, self.image_size)
        result = [out[name] for name in DETECTION_OUTPUTS]
        if self.with_masks:
            masks = self._masks(features, boxes[kept], labels[kept], batch[kept])
            result.append(scatter_rows(masks, slot, input, self.max_detections))
        return tuple(result)

    # -- shared steps ------------------------------------------------------------------
    def _prepare(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002
        transform = self.model.transform
        images = transform.normalize(input)
        divisor = getattr(transform, "size_divisible", 1)
        h, w = self.image_size
        pad_h, pad_w = (-h) % divisor, (-w) % divisor
        return F.pad(images, (0, pad_w, 0, pad_h)) if pad_h or pad_w else images

    def _anchors(self, generator: nn.Module, images: torch.Tensor, features: list[torch.Tensor]) -> torch.Tensor:
        """Anchors of one image: every image has the same size, so they are shared."""
        from torchvision.models.detection.image_list import ImageList

        return generator(ImageList(images[:1], [self.image_size]), features)[0]

    def _clip(self, boxes: torch.Tensor) -> torch.Tensor:
        from torchvision.ops import boxes as box_ops

        return box_ops.clip_boxes_to_image(boxes, self.image_size)

    def _pool(self, pooler: nn.Module, features: dict[str, torch.Tensor], boxes: torch.Tensor,
              batch: torch.Tensor) -> torch.Tensor:
        """MultiScaleRoIAlign on a flat box list with image indices (no per-image lists)."""
        from torchvision.ops import roi_align
        from torchvision.ops.poolers import _filter_input, _onnx_merge_levels, _setup_scales

        maps = _filter_input(features, pooler.featmap_names)
        if pooler.scales is None or pooler.map_levels is None:
            pooler.scales, pooler.map_levels = _setup_scales(
                maps, [self.image_size], pooler.canonical_scale, pooler.canonical_level)
        rois = torch.cat([batch.to(boxes.dtype)[:, None], boxes], dim=1)
        settings = {"output_size": pooler.output_size, "sampling_ratio": pooler.sampling_ratio}
        if len(maps) == 1:
            return roi_align(maps[0], rois, spatial_scale=pooler.scales[0], **settings)
        levels = pooler.map_levels([boxes])
        pooled = [roi_align(level_map, rois[torch.where(levels == level)[0]], spatial_scale=scale, **settings)
                  for level, (level_map, scale) in enumerate(zip(maps, pooler.scales, strict=True))]
        return _onnx_merge_levels(levels, pooled)

    # -- families ----------------------------------------------------------------------
    def _rcnn(self, images: torch.Tensor, features: dict[str, torch.Tensor]):
        proposals, proposal_batch = self._proposals(images, features)
        heads = self.model.roi_heads
        pooled = heads.box_head(self._pool(heads.box_roi_pool, features, proposals, proposal_batch))
        class_logits, regression = heads.box_predictor(pooled)
        num_classes = class_logits.shape[-1]
        boxes = self._clip(heads.box_coder.decode_single(regression, proposals).reshape(-1, num_classes, 4))
        scores = F.softmax(class_logits, -1)
        labels = torch.arange(num_classes, device=scores.device).view(1, -1).expand_as(scores)
        boxes, scores, labels = boxes[:, 1:], scores[:, 1:], labels[:, 1:]  # drop background
        valid = (scores > self.score_threshold) & _large_enough(boxes, 1e-2)
        rows = proposal_batch[:, None].expand_as(scores)
        index = torch.where(valid)
        return rows[index], boxes[index], scores[index], labels[index]

    def _proposals(self, images: torch.Tensor, features: dict[str, torch.Tensor]):
        """RPN proposals of every image as one flat list: ``(boxes [K, 4], image index [K])``."""
        from torchvision.models.detection.rpn import concat_box_prediction_layers

        rpn, maps = self.model.rpn, list(features.values())
        objectness, deltas = rpn.head(maps)
        anchors = self._anchors(rpn.anchor_generator, images, maps)
        per_level = [o[0].numel() for o in objectness]
        objectness, deltas = concat_box_prediction_layers(objectness, deltas)
        deltas = deltas.reshape(images.shape[0], -1, 4)
        boxes = rpn.box_coder.decode_single(deltas.reshape(-1, 4), anchors[None].expand_as(deltas).reshape(-1, 4))
        boxes = boxes.reshape(images.shape[0], -1, 4)
        objectness = objectness.detach().reshape(images.shape[0], -1)
        levels = torch.cat([torch.full((n,), i, dtype=torch.int64) for i, n in enumerate(per_level)])
        top = rpn._get_top_n_idx(objectness, per_level)
        scores = torch.sigmoid(torch.gather(objectness, 1, top))
        boxes = self._clip(torch.gather(boxes, 1, top[..., None].expand(-1, -1, 4)))
        levels = levels[top]
        valid = _large_enough(boxes, rpn.min_size) & (scores >= rpn.score_thresh)
        batch, boxes, scores, levels = flat_candidates(valid, boxes, scores, levels)
        out, _, _ = nms_padded(boxes, scores, levels, batch, images, rpn.nms_thresh, rpn.post_nms_top_n(),
                               self.image_size)
        counts = out["num_detections"]
        slots = torch.arange(out["boxes"].shape[1], device=counts.device)[None] < counts[:, None]
        batch, proposals = flat_candidates(slots, out["boxes"])
        return proposals, batch

    def _retinanet(self, images: torch.Tensor, features: dict[str, torch.Tensor]):
        return self._dense(images, features, self.model.box_coder.decode_single)

    def _fcos(self, images: torch.Tensor, features: dict[str, torch.Tensor]):
        return self._dense(images, features, self.model.box_coder.decode)

    def _dense(self, images: torch.Tensor, features: dict[str, torch.Tensor], decode):
        """RetinaNet / FCOS: per level, top-k of (anchor, class) scores, then threshold."""
        maps = list(features.values())
        head = self.model.head(maps)
        anchors = self._anchors(self.model.anchor_generator, images, maps)
        locations = [m.shape[-2] * m.shape[-1] for m in maps]
        per_anchor = anchors.shape[0] // sum(locations)
        cls_logits, regression = head["cls_logits"], head["bbox_regression"]
        num_classes = cls_logits.shape[-1]
        scores = torch.sigmoid(cls_logits)
        if "bbox_ctrness" in head:
            scores = torch.sqrt(scores * torch.sigmoid(head["bbox_ctrness"]))
        parts, start = [], 0
        for count in (n * per_anchor for n in locations):
            level_scores = scores[:, start:start + count].flatten(1)
            top, index = level_scores.topk(min(self.model.topk_candidates, count * num_classes), dim=1)
            anchor_index = torch.div(index, num_classes, rounding_mode="floor")
            deltas = torch.gather(regression[:, start:start + count], 1, anchor_index[..., None].expand(-1, -1, 4))
            level_anchors = anchors[start:start + count][anchor_index]
            boxes = decode(deltas.reshape(-1, 4), level_anchors.reshape(-1, 4)).reshape(deltas.shape)
            parts.append((self._clip(boxes), top, index % num_classes))
            start += count
        boxes, scores, labels = (torch.cat(p, dim=1) for p in zip(*parts, strict=True))
        batch, boxes, scores, labels = flat_candidates(scores > self.score_threshold, boxes, scores, labels)
        return batch, boxes, scores, labels

    def _ssd(self, images: torch.Tensor, features: dict[str, torch.Tensor]):
        """SSD / SSDlite: per class, top-k anchors by softmax score, then threshold."""
        maps = list(features.values())
        head = self.model.head(maps)
        anchors = self._anchors(self.model.anchor_generator, images, maps)
        regression = head["bbox_regression"]
        boxes = self.model.box_coder.decode_single(regression.reshape(-1, 4),
                                                   anchors[None].expand_as(regression).reshape(-1, 4))
        boxes = self._clip(boxes.reshape(regression.shape))
        scores = F.softmax(head["cls_logits"], dim=-1)[..., 1:].transpose(1, 2)  # [B, C-1, N]
        top, index = scores.topk(min(self.model.topk_candidates, scores.shape[-1]), dim=2)
        labels = torch.arange(1, scores.shape[1] + 1, device=scores.device)[None, :, None].expand_as(top)
        boxes = torch.gather(boxes, 1, index.flatten(1)[..., None].expand(-1, -1, 4))
        batch, boxes, scores, labels = flat_candidates(top.flatten(1) > self.score_threshold, boxes,
                                                       top.flatten(1), labels.flatten(1))
        return batch, boxes, scores, labels

    def _masks(self, features: dict[str, torch.Tensor], boxes: torch.Tensor, labels: torch.Tensor,
               batch: torch.Tensor) -> torch.Tensor:
        """Mask R-CNN masks of the kept detections, pasted into the image: ``[K, H, W]``."""
        from torchvision.models.detection.roi_heads import paste_masks_in_image

        heads = self.model.roi_heads
        logits = heads.mask_predictor(heads.mask_head(self._pool(heads.mask_roi_pool, features, boxes, batch)))
        rows = torch.arange(logits.shape[0], device=logits.device)
        probability = logits[rows, labels].sigmoid()[:, None]
        masks = paste_masks_in_image(probability, boxes, self.image_size)[:, 0]
        if self.binary_masks:
            return (masks >= self.mask_threshold).to(torch.uint8)
        return masks


def _large_enough(boxes: torch.Tensor, min_size: float) -> torch.Tensor:
    return ((boxes[..., 2] - boxes[..., 0]) >= min_size) & ((boxes[..., 3] - boxes[..., 1]) >= min_size)
