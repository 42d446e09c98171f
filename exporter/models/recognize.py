"""Which architecture wrote this state dict? Match key names and tensor shapes against builders.

Every candidate is built once per process on the ``meta`` device (no memory, ~0.05 s each) and
its ``{key: shape}`` fingerprint cached. A checkpoint is compared with each fingerprint after
stripping its wrapper prefix: the confidence is the share of tensors that agree in name and
shape, over the larger of the two key sets, so a model with extra or missing layers scores
below 1. Shapes that depend on the number of classes (the head) or on the image size (ViT
position embeddings) are matched by name only and read back: ``num_classes`` from the head's
first dimension, the input size from the position embedding's length.

Candidates: every torchvision classifier, and a curated list of popular timm models (timm has
~1,300; building them all would take minutes). Any other timm model is importable by naming it.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

PROBE_CLASSES = 1000  # builders' default head size: the keys whose first dim is this are the head
TIMM_CANDIDATES = (
    "resnet18", "resnet26", "resnet34", "resnet50", "resnet50d", "resnet101", "resnext50_32x4d",
    "seresnet50", "wide_resnet50_2", "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3",
    "tf_efficientnet_b0", "efficientnetv2_rw_s", "mobilenetv2_100", "mobilenetv3_large_100",
    "mobilenetv3_small_100", "mnasnet_100", "ghostnet_100", "rexnet_100", "mixnet_s", "regnety_008",
    "regnety_016", "convnext_atto", "convnext_femto", "convnext_pico", "convnext_nano", "convnext_tiny",
    "convnext_small", "vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224",
    "vit_base_patch32_224", "deit_tiny_patch16_224", "deit_small_patch16_224", "swin_tiny_patch4_window7_224",
    "densenet121", "dla34", "resnetv2_50", "cspresnet50", "edgenext_small", "mobilevit_s", "repvgg_a2",
    "levit_128", "efficientformer_l1", "fastvit_t8", "hrnet_w18_small",
)
SIZE_KEYS = ("pos_embed", "encoder.pos_embedding")  # ViT position embeddings: shape follows image size
PATCH_KEYS = ("patch_embed.proj.weight", "conv_proj.weight")


@dataclass(frozen=True)
class Candidate:
    """One proposed architecture for a state dict."""

    architecture: str
    confidence: float
    num_classes: int | None
    input_size: tuple[int, int, int] | None
    prefix: str

    def to_dict(self) -> dict[str, Any]:
        return {"architecture": self.architecture, "confidence": round(self.confidence, 4),
                "num_classes": self.num_classes, "input_size": list(self.input_size) if self.input_size else None,
                "prefix": self.prefix}


@dataclass(frozen=True)
class _Fingerprint:
    shapes: dict[str, tuple[int, ...]]
    head: frozenset[str]


def detect_architecture(state_dict: dict[str, Any], top: int = 5, min_confidence: float = 0.5) -> list[Candidate]:
    """The best-matching classifier architectures for ``state_dict``, most confident first."""
    from exporter.checkpoint import strip_prefix
    from exporter.models.classification import TIMM_PREFIX

    tensors = {k: v for k, v in state_dict.items() if hasattr(v, "shape") and not k.endswith("num_batches_tracked")}
    found = []
    for name, print_ in _fingerprints().items():
        stripped, prefix = strip_prefix(tensors, set(print_.shapes))
        score = _confidence(stripped, print_)
        if score >= min_confidence:
            found.append(Candidate(name, score, _num_classes(stripped, print_), _input_size(stripped), prefix))
    # Equal confidence: prefer torchvision (no extra dependency), then the shorter name.
    found.sort(key=lambda c: (-c.confidence, c.architecture.startswith(TIMM_PREFIX), len(c.architecture)))
    return found[:top]


def _confidence(stripped: dict[str, Any], print_: _Fingerprint) -> float:
    agree = sum(1 for key, shape in print_.shapes.items()
                if key in stripped and (key in print_.head or key in SIZE_KEYS or tuple(stripped[key].shape) == shape))
    return agree / max(len(stripped), len(print_.shapes), 1)


def _num_classes(stripped: dict[str, Any], print_: _Fingerprint) -> int | None:
    sizes = {int(stripped[k].shape[0]) for k in print_.head if k in stripped and len(stripped[k].shape)}
    return sizes.pop() if len(sizes) == 1 else None


def _input_size(stripped: dict[str, Any]) -> tuple[int, int, int] | None:
    """Image size implied by a ViT position embedding and patch size (None for convnets)."""
    embed = next((stripped[k] for k in SIZE_KEYS if k in stripped), None)
    patch = next((stripped[k] for k in PATCH_KEYS if k in stripped), None)
    if embed is None or patch is None:
        return None
    tokens = int(embed.shape[1])
    for extra in (1, 0, 2):  # class token, none, class + distillation token
        side = math.isqrt(tokens - extra)
        if side * side == tokens - extra:
            pixels = side * int(patch.shape[-1])
            return (int(patch.shape[1]), pixels, pixels)
    return None


@functools.cache
def _fingerprints() -> dict[str, _Fingerprint]:
    import warnings

    from exporter.models.classification import TIMM_PREFIX, torchvision_classifiers

    names = list(torchvision_classifiers()) + [TIMM_PREFIX + n for n in TIMM_CANDIDATES if _timm_has(n)]
    prints = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in names:
            print_ = _fingerprint(name)
            if print_ is not None:
                prints[name] = print_
    return prints


def _fingerprint(name: str) -> _Fingerprint | None:
    import torch

    from exporter.models.classification import build_torchvision_classifier

    try:
        with torch.device("meta"):
            model = build_torchvision_classifier(name, PROBE_CLASSES, (3, 224, 224))
    except Exception:  # noqa: BLE001 - a builder that cannot run on meta (regnet) is not a candidate
        return None
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    head = frozenset(k for k, s in shapes.items() if s and s[0] == PROBE_CLASSES)
    return _Fingerprint(shapes, head)


def _timm_has(name: str) -> bool:
    try:
        import timm
    except ImportError:
        return False
    return bool(timm.is_model(name))
