"""Classification and regression on torchvision backbones."""

from __future__ import annotations

import functools

import torch
from torch import nn

from exporter.errors import ArchitectureError


@functools.cache
def torchvision_classifiers() -> tuple[str, ...]:
    """Every torchvision classification builder name (resnet18, vit_b_16, ...)."""
    import torchvision

    return tuple(torchvision.models.list_models(module=torchvision.models))


TIMM_PREFIX = "timm/"


def build_timm_classifier(name: str, num_classes: int, input_size: tuple) -> nn.Module:
    """``timm.create_model(name, pretrained=False, num_classes=...)``, sized to ``input_size``
    for models whose weights depend on it (ViT position embeddings)."""
    try:
        import timm
    except ImportError:
        raise ArchitectureError("timm/<name> architectures need the timm package: pip install timm",
                                stage="build") from None
    if not timm.is_model(name):
        raise ArchitectureError(f"timm has no model {name!r}; see timm.list_models().", stage="build")
    model = timm.create_model(name, pretrained=False, num_classes=num_classes)
    default = tuple(model.pretrained_cfg.get("input_size") or ())
    if hasattr(model, "patch_embed") and default and tuple(input_size) != default:
        model = timm.create_model(name, pretrained=False, num_classes=num_classes, img_size=tuple(input_size[1:]))
    return model


def timm_normalization(architecture: str) -> dict[str, list[float]] | None:
    """The mean/std a ``timm/<name>`` model was configured with (ViTs use 0.5, most others ImageNet's);
    None for other architectures."""
    if not architecture.startswith(TIMM_PREFIX):
        return None
    name = architecture.removeprefix(TIMM_PREFIX)
    try:
        import timm

        cfg = timm.get_pretrained_cfg(name)
    except Exception:  # noqa: BLE001 - unknown name or no timm: the caller keeps its default
        return None
    if cfg is None or not getattr(cfg, "mean", None):
        return None
    return {"mean": [float(v) for v in cfg.mean], "std": [float(v) for v in cfg.std]}


def build_torchvision_classifier(architecture: str, num_classes: int, input_size: tuple) -> nn.Module:
    """A torchvision classifier (or ``timm/<name>``) with ``num_classes`` outputs and random weights."""
    import torchvision

    if architecture.startswith(TIMM_PREFIX):
        return build_timm_classifier(architecture.removeprefix(TIMM_PREFIX), num_classes, input_size)

    kwargs: dict = {"weights": None, "num_classes": num_classes}
    if architecture.startswith("vit_"):
        kwargs["image_size"] = input_size[1]  # ViT's position embedding is sized by the image.
    if architecture in ("googlenet", "inception_v3"):
        kwargs["init_weights"] = False  # skips scipy-based init; weights come from the ckpt
    return torchvision.models.get_model(architecture, **kwargs)


class FirstOutput(nn.Module):
    """Eval wrapper: one image batch in, the primary tensor out (drops aux heads)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input: torch.Tensor) -> tuple[torch.Tensor]:  # noqa: A002 - ONNX input name
        out = self.model(input)
        if isinstance(out, tuple):  # GoogLeNet / Inception namedtuples
            out = out[0]
        return (out,)
