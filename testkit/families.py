"""Models of other libraries saved as those libraries save them (random weights, small sizes): transformers and
smp ``save_pretrained`` folders, an smp state dict, and an anomalib PaDiM fitted by its own ``Engine`` — for the
families' tests and ``make bench``."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

CLASSES = ["circle", "square", "triangle"]
SIZE = 64


def _labels() -> dict:
    return {"id2label": dict(enumerate(CLASSES)), "label2id": {n: i for i, n in enumerate(CLASSES)}}


def save_family_models(root: Path) -> Path:
    """``vit``, ``detr``, ``cond-detr``, ``segformer``, ``mask2former`` and ``unet`` folders and ``fpn-binary.pth``
    under ``root``."""
    import segmentation_models_pytorch as smp
    import transformers as hf

    torch.manual_seed(0)
    vit = hf.ViTConfig(image_size=SIZE, patch_size=16, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=64, **_labels())
    hf.ViTForImageClassification(vit).save_pretrained(root / "vit")
    hf.ViTImageProcessor(size={"height": SIZE, "width": SIZE}).save_pretrained(root / "vit")
    backbone = hf.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 16, 32], depths=[1, 1, 1, 1],
                              out_features=["stage4"])
    small = {"d_model": 32, "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 2,
             "decoder_attention_heads": 2, "encoder_ffn_dim": 32, "decoder_ffn_dim": 32, "num_queries": 12,
             "use_timm_backbone": False, "backbone_config": backbone, "use_pretrained_backbone": False, **_labels()}
    hf.DetrForObjectDetection(hf.DetrConfig(**small)).save_pretrained(root / "detr")
    hf.ConditionalDetrForObjectDetection(hf.ConditionalDetrConfig(**small)).save_pretrained(root / "cond-detr")
    for name, processor in (("detr", hf.DetrImageProcessor), ("cond-detr", hf.ConditionalDetrImageProcessor)):
        processor(size={"height": SIZE, "width": SIZE}).save_pretrained(root / name)
    segformer = hf.SegformerConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[4, 2], hidden_sizes=[8, 16],
                                  num_attention_heads=[1, 2], decoder_hidden_size=16, strides=[4, 2],
                                  patch_sizes=[7, 3], mlp_ratios=[2, 2], **_labels())
    hf.SegformerForSemanticSegmentation(segformer).save_pretrained(root / "segformer")
    hf.SegformerImageProcessor(size={"height": SIZE, "width": SIZE}).save_pretrained(root / "segformer")
    smp.Unet("resnet18", encoder_weights=None, classes=3, decoder_channels=(32, 16, 16, 8, 8)).save_pretrained(
        root / "unet")
    torch.save(smp.FPN("resnet18", encoder_weights=None, classes=1).state_dict(), root / "fpn-binary.pth")
    # last: the models above keep the random weights their tests were written against
    swin = hf.SwinConfig(image_size=SIZE, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=4,
                         out_features=["stage1", "stage2", "stage3", "stage4"])
    mask2former = hf.Mask2FormerConfig(backbone_config=swin, feature_size=32, mask_feature_size=32, hidden_dim=32,
                                       encoder_feedforward_dim=64, dim_feedforward=64, encoder_layers=1,
                                       decoder_layers=2, num_attention_heads=2, num_queries=8,
                                       use_pretrained_backbone=False, **_labels())
    hf.Mask2FormerForUniversalSegmentation(mask2former).save_pretrained(root / "mask2former")
    hf.Mask2FormerImageProcessor(size={"height": SIZE, "width": SIZE}).save_pretrained(root / "mask2former")
    return root




def fit_anomalib(root: Path, model: str = "Padim", images: int = 24) -> Path:
    """An anomalib model fitted by ``Engine.fit`` on generated 64 px textures (a bright square is the defect), saved
    as the Lightning checkpoint anomalib writes; the MVTec-style ``val`` set beside it (``good/``, ``square/``).
    Offline: random backbones, and for EfficientAD its downloads made here (``_efficientad_offline``)."""
    import anomalib.models
    from anomalib.data import Folder
    from anomalib.engine import Engine

    from exporter.families.anomalib import no_pretrained_downloads

    rng = np.random.default_rng(0)
    for split, count in (("train/good", images), ("val/good", 6), ("val/square", 6)):
        (root / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = (rng.random((SIZE, SIZE, 3)) * 60 + 100).astype(np.uint8)
            if split.endswith("square"):  # defects of graded size and brightness: scores that differ, not a tie
                side, (y, x) = 8 + 2 * i, rng.integers(4, SIZE - 24, 2)
                pixels[y:y + side, x:x + side] = 160 + 15 * i
            Image.fromarray(pixels).save(root / split / f"{i}.png")
    torch.manual_seed(0)
    data = Folder(name="textures", root=root, normal_dir="train/good", abnormal_dir="val/square",
                  normal_test_dir="val/good", train_batch_size=1 if model == "EfficientAd" else 8,  # as it requires
                  eval_batch_size=8, num_workers=0)
    settings = {"Padim": {"backbone": "resnet18", "layers": ["layer1", "layer2"], "n_features": 50},
                "Stfpm": {"backbone": "resnet18", "layers": ["layer1", "layer2"]},
                "Patchcore": {"backbone": "resnet18", "layers": ["layer2", "layer3"], "coreset_sampling_ratio": 0.05},
                "Fastflow": {"backbone": "resnet18", "flow_steps": 2},
                "ReverseDistillation": {"backbone": "resnet18", "layers": ["layer1", "layer2", "layer3"]},
                "EfficientAd": {"model_size": "small", "imagenet_dir": root / "imagenette"}}[model]
    model_class = getattr(anomalib.models, model)
    if "pre_trained" in inspect.signature(model_class).parameters:  # no download: random backbone weights
        settings["pre_trained"] = False
    # No metrics while fitting (a defect-free folder has no masks for pixel metrics); the thresholds are the
    # post-processor's, fitted on the validation images all the same.
    with no_pretrained_downloads():  # STFPM's teacher: random here, as every other backbone
        module = model_class(**settings, evaluator=False)
    if model == "Patchcore":
        _steady_heap()  # process-wide and for good: only where its coreset needs it (bench, not the tests' workers)
    engine = Engine(max_epochs=1, default_root_dir=root / "engine", logger=False, accelerator="cpu", devices=1,
                    enable_progress_bar=False, enable_model_summary=False)
    with _efficientad_offline(root, module) if model == "EfficientAd" else contextlib.nullcontext():
        engine.fit(model=module, datamodule=data)
    engine.trainer.save_checkpoint(root / f"{model.lower()}.ckpt")
    return root / f"{model.lower()}.ckpt"


@contextlib.contextmanager
def _efficientad_offline(root: Path, module: Any) -> Iterator[None]:
    """What EfficientAD downloads when it fits, made here: its "pre-trained" teacher (the module's own random
    teacher, where anomalib's cache looks: ``$XDG_CACHE_HOME/anomalib/pre_trained``) and an ImageNette folder
    (generated noise) for its penalty images."""
    import os

    rng = np.random.default_rng(1)
    noise = root / "imagenette" / "noise"
    noise.mkdir(parents=True, exist_ok=True)
    for i in range(4):
        Image.fromarray((rng.random((SIZE, SIZE, 3)) * 255).astype(np.uint8)).save(noise / f"{i}.png")
    teacher = root / "cache" / "anomalib" / "pre_trained" / "efficientad_pretrained_weights"
    teacher.mkdir(parents=True, exist_ok=True)
    torch.save(module.model.teacher.state_dict(), teacher / "pretrained_teacher_small.pth")
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(root / "cache")
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("XDG_CACHE_HOME")
        else:
            os.environ["XDG_CACHE_HOME"] = before


def _steady_heap() -> None:
    """Fix glibc's mmap threshold at 1 MB for this process. PatchCore's coreset selection allocates and frees a
    24 MB distance vector per step; with glibc's dynamic threshold each one lands in a heap that only grows (~18 MB a
    step here: 22 GB for 1,227 steps), with a fixed one the process stays at 1.1 GB and runs 4× faster."""
    import ctypes
    import ctypes.util

    m_mmap_threshold = -3
    ctypes.CDLL(ctypes.util.find_library("c")).mallopt(m_mmap_threshold, 1 << 20)
