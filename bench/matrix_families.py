"""The model families' cases of ``make matrix``: every segmentation_models_pytorch architecture over two encoders,
and the transformers classes we import (image classifiers, DETR-family detectors, semantic segmenters), each at two
input sizes with random weights, written as the checkpoint an import makes (``exporter.families``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SMP_ENCODERS = ("resnet18", "mobilenet_v2")
SMP_SIZES = (256, 128)
# model_type per task; each built from transformers' default config (num_labels, image size set), random weights
HF_MODELS = {"classification": ("vit", "deit", "convnext", "swin", "resnet", "efficientnet", "mobilenet_v2", "beit"),
             "object_detection": ("detr", "conditional_detr", "deformable_detr", "rt_detr", "rt_detr_v2", "yolos"),
             "segmentation": ("segformer", "upernet", "dpt", "mobilevit", "mask2former")}
HF_SIZES = {"classification": (224, 128), "object_detection": (512, 320), "segmentation": (512, 256)}
HF_CLASS_SUFFIX = {"classification": "ForImageClassification", "object_detection": "ForObjectDetection",
                   "segmentation": "ForSemanticSegmentation"}
CLASSES = 5
# Kept at transformers' own initialisation: He-normal on every matrix of Mask2Former's attention layers makes it
# chaotic — over 3 draws PyTorch float32 itself was 0.001–0.08 from float64 and the ONNX file up to 0.045 (so no file
# can be judged); as transformers initialises it, both are within 5e-5 of float64 at 256 px.
OWN_INIT = {"hf/mask2former"}
IMAGENET = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}


def family_cases(case_type: Any) -> list[Any]:
    """``Case``s (task, ``smp/<Arch>:<encoder>`` or ``hf/<model_type>``, size) of every family model."""
    from exporter.families.smp import architectures

    found = [case_type("segmentation", f"smp/{arch}:{encoder}", size, None)
             for arch in architectures() for encoder in SMP_ENCODERS for size in SMP_SIZES]
    found += [case_type(task, f"hf/{model_type}", size, None)
              for task, types in HF_MODELS.items() for model_type in types for size in HF_SIZES[task]]
    return found


def write_family_checkpoint(task: str, architecture: str, size: int, root: Path) -> float:
    """The checkpoint an import of this family model writes; its parameter count (millions)."""
    import torch

    from testkit.models import write_experiment

    model, hparams = (_smp(architecture, size) if architecture.startswith("smp/") else
                      _transformers(task, architecture.removeprefix("hf/"), size))
    hparams = {"task": task, "num_classes": CLASSES, "class_names": [f"class_{i}" for i in range(CLASSES)],
               "input_size": [3, size, size], **hparams}
    with torch.no_grad():
        for parameter in model.parameters() if architecture not in OWN_INIT else ():  # lively, as the other cases
            if parameter.dim() > 1:
                parameter.normal_(0, (2.0 / parameter[0].numel()) ** 0.5)
    write_experiment(root, dict(model.state_dict()), hparams=hparams, task=task)
    return round(sum(p.numel() for p in model.parameters()) / 1e6, 1)


def _smp(architecture: str, size: int) -> tuple[Any, dict[str, Any]]:
    import segmentation_models_pytorch as smp

    name, encoder = architecture.removeprefix("smp/").split(":")
    settings = {"encoder_name": encoder, "encoder_weights": None, "classes": CLASSES, "activation": None}
    return getattr(smp, name)(**settings), {"architecture": f"smp/{name}", "smp_config": settings}


def _transformers(task: str, model_type: str, size: int) -> tuple[Any, dict[str, Any]]:
    import transformers

    config = transformers.AutoConfig.for_model(model_type, num_labels=CLASSES)
    image_size = [size, size] if isinstance(getattr(config, "image_size", None), (list, tuple)) else size  # YOLOS
    for key, value in (("image_size", image_size), ("use_pretrained_backbone", False), ("use_timm_backbone", False)):
        if hasattr(config, key):
            setattr(config, key, value)
    mapping = {"classification": transformers.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING,
               "object_detection": transformers.MODEL_FOR_OBJECT_DETECTION_MAPPING,
               "segmentation": transformers.MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING}[task]
    if task == "segmentation" and type(config) not in mapping:  # Mask2Former: universal, exported as semantic
        mapping = transformers.MODEL_FOR_UNIVERSAL_SEGMENTATION_MAPPING
    model_class = mapping[type(config)]
    model_class = model_class[0] if isinstance(model_class, tuple) else model_class  # DeiT: (plain, with teacher)
    processor = {**IMAGENET, "do_normalize": True, "size": {"height": size, "width": size}}
    return model_class(config), {"architecture": f"hf/{model_class.__name__}", "hf_config": config.to_dict(),
                                 "hf_processor": processor,
                                 "normalization": {"mean": IMAGENET["image_mean"], "std": IMAGENET["image_std"]}}
