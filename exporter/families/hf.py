"""Hugging Face transformers vision models, from their ``save_pretrained`` folder (``config.json``, weights,
``preprocessor_config.json``), as ``hf/<ModelClass>``.

- ``*ForImageClassification`` → classification: ``logits``.
- ``*ForSemanticSegmentation`` (SegFormer, UperNet, DPT, …) → semantic segmentation: the logits upsampled to the
  input as ``post_process_semantic_segmentation`` does (bilinear, corners not aligned), or its argmax mask.
- ``Mask2FormerForUniversalSegmentation`` → semantic segmentation: its processor's
  ``post_process_semantic_segmentation`` in the graph (class probabilities × mask sigmoids, summed over queries);
  imported with ``--task instance_segmentation``, its ``post_process_instance_segmentation``, padded as our
  instance segmentation (boxes are the masks' extents).
- DETR-family ``*ForObjectDetection`` → object detection: the image processor's ``post_process_object_detection``
  inside the graph — softmax over classes without "no object" (DETR, YOLOS) or sigmoid scores over every
  query × class (Conditional/Deformable DETR, RT-DETR), the best ``max_detections`` sorted by score, boxes from
  centre/size to corners in input pixels, padded to our ``boxes``/``scores``/``labels``/``num_detections``. The
  graph takes images in [0, 1] and normalises with the processor's mean and std itself.

Class names come from ``id2label``, input size and normalisation from the image processor (rescale 1/255 first).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporter import capabilities
from exporter.errors import ArchitectureError, CheckpointError, StateDictMismatchError, one_line
from exporter.families.base import WEIGHT_FILES, Family, Imported, input_size_from, read_json
from exporter.models.spec import IDENTITY_NORMALIZATION

if TYPE_CHECKING:
    from torch import nn

    from exporter.models.spec import ModelSpec

TASK_BY_SUFFIX = {"ForImageClassification": "classification", "ForObjectDetection": "object_detection",
                  "ForSemanticSegmentation": "segmentation", "ForUniversalSegmentation": "segmentation"}
# Detectors whose processors score with a softmax whose last class is "no object"; the others use sigmoid scores
# over every query and class (focal loss), then the top-k of all pairs.
SOFTMAX_DETECTORS = ("detr", "yolos", "table-transformer")


class Transformers(Family):
    prefix = "hf/"

    def recognize(self, folder: Path, config: dict[str, Any]) -> Imported | None:
        if "model_type" not in config or not config.get("architectures"):
            return None
        name = str(config["architectures"][0])
        task = task_of(name)
        if (folder / "preprocessor_config.json").is_file():
            processor = read_json(folder / "preprocessor_config.json")
        else:
            processor = {}
        if processor.get("do_rescale", True) and abs(float(processor.get("rescale_factor", 1 / 255)) - 1 / 255) > 1e-9:
            raise ArchitectureError(f"preprocessor_config.json rescales by {processor['rescale_factor']}; only "
                                    "1/255 (pixels to [0, 1]) is supported.", stage="load")
        state_dict, config, files, sha = load_pretrained(folder, name)
        labels = {int(k): str(v) for k, v in (config.get("id2label") or {}).items()}
        class_names = [labels.get(i, f"class_{i}") for i in range(len(labels))]
        mean, std = processor.get("image_mean"), processor.get("image_std")
        normalization = ({"mean": list(mean), "std": list(std)} if processor.get("do_normalize", True) and mean
                         and std else dict(IDENTITY_NORMALIZATION))
        channels = int(config.get("num_channels", 3))
        size = input_size_from(processor.get("size"), int(config.get("image_size") or 224))
        hp = {"task": task, "architecture": self.prefix + name, "num_classes": len(class_names),
              "class_names": class_names, "input_size": [channels, size[1], size[2]],
              "normalization": normalization, "hf_config": config, "hf_processor": processor}
        also = ("instance_segmentation",) if name.endswith("ForUniversalSegmentation") else ()  # Mask2Former
        return Imported(state_dict, hp, sha, files, also)

    def build(self, spec: ModelSpec) -> nn.Module:
        import transformers

        config_dict = dict(spec.extra.get("hf_config") or {})
        name = spec.architecture.removeprefix(self.prefix)
        model_class = getattr(transformers, name, None)
        if model_class is None or not config_dict:
            raise ArchitectureError(f"transformers {transformers.__version__} has no model class {name!r}, or the "
                                    "checkpoint carries no hf_config.", stage="build")
        try:
            config = transformers.AutoConfig.for_model(**config_dict)
        except (ValueError, TypeError, KeyError) as exc:
            raise CheckpointError(f"config.json does not describe a {name}: {exc}", stage="build") from None
        for key in ("use_pretrained_backbone",):  # never fetch weights from a hub: they come from the checkpoint
            if hasattr(config, key):
                setattr(config, key, False)
        return model_class(config)

    def wrap(self, model: nn.Module, spec: ModelSpec, options: dict[str, Any]) -> nn.Module:
        from exporter.families.outputs import (
            ClassifierOutputs,
            DetrOutputs,
            SemanticOutputs,
            UniversalInstanceOutputs,
            UniversalSemanticOutputs,
        )

        if spec.task == "object_detection":
            processor = spec.extra.get("hf_processor") or {}
            return DetrOutputs(model, spec, options, softmax=scores_with_softmax(model.config),
                               mean=processor.get("image_mean") if processor.get("do_normalize", True) else None,
                               std=processor.get("image_std")).eval()
        if spec.task == "instance_segmentation" and spec.architecture.endswith("ForUniversalSegmentation"):
            return UniversalInstanceOutputs(model, options).eval()
        if spec.task == "segmentation":
            universal = spec.architecture.endswith("ForUniversalSegmentation")  # Mask2Former: semantic
            return (UniversalSemanticOutputs if universal else SemanticOutputs)(model, options).eval()
        return ClassifierOutputs(model).eval()

    def needs(self, task: str, architecture: str) -> frozenset[str]:
        needs = set()
        if task in ("object_detection", "instance_segmentation"):
            # detection, Mask2Former's instances: top-k of the queries and a gather of their boxes or masks; a fixed
            # number of outputs (no NMS, no RoIAlign, no mask pasting)
            needs.add(capabilities.TOPK_GATHER)
        if architecture.startswith(self.prefix + "ConditionalDetr"):
            needs.add(capabilities.SLICE_UPDATE)  # its decoder adds the reference points into the boxes' centres
        if architecture.startswith(self.prefix + "Mask2Former"):
            needs.add(capabilities.DEFORMABLE_ATTENTION)
        return frozenset(needs)


def load_pretrained(folder: Path, name: str) -> tuple[dict[str, Any], dict[str, Any], list[str], str]:
    """``from_pretrained`` of the folder, offline and strictly: the model's own state dict (transformers renames
    saved keys as it loads), its config, the files read and a sha256 over them.

    Raises:
        StateDictMismatchError: weights missing, unexpected or of another shape than config.json says.
        CheckpointError: the folder does not load.
    """
    import hashlib

    import transformers

    model_class = getattr(transformers, name, None)
    if model_class is None:
        raise ArchitectureError(f"transformers {transformers.__version__} has no model class {name!r}.", stage="load")
    files = sorted(p.name for p in folder.iterdir() if p.name.endswith((".safetensors", ".bin", ".json")))
    if not any(f.endswith((".safetensors", ".bin")) for f in files):
        raise CheckpointError(f"No weights beside config.json: expected one of {', '.join(WEIGHT_FILES)}.",
                              stage="load")
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # its warnings repeat what we raise below; no progress bars
    transformers.logging.disable_progress_bar()
    try:
        config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
        if hasattr(config, "use_pretrained_backbone"):
            config.use_pretrained_backbone = False  # weights come from the folder, never from a hub
        model, info = model_class.from_pretrained(folder, config=config, local_files_only=True,
                                                  output_loading_info=True, ignore_mismatched_sizes=True)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"The folder does not load as a {name}: {one_line(exc, 300)}", stage="load") from None
    finally:
        transformers.logging.set_verbosity(verbosity)
        transformers.logging.enable_progress_bar()
    problems = [f"{what} ({len(keys)}): {', '.join(sorted(map(_key, keys))[:6])}"
                for what, keys in (("missing", info.get("missing_keys")), ("unexpected", info.get("unexpected_keys")),
                                   ("other shapes", info.get("mismatched_keys"))) if keys]
    if problems:
        raise StateDictMismatchError(f"The weights do not fit config.json's {name} — {'; '.join(problems)}.",
                                     stage="load")
    digest = hashlib.sha256()
    for file in files:
        digest.update((folder / file).read_bytes())
    return dict(model.state_dict()), model.config.to_dict(), files, digest.hexdigest()


def _key(entry: Any) -> str:
    """A loading-info entry: a key, or ``(key, shape in the file, shape config.json gives)``."""
    if isinstance(entry, tuple) and len(entry) == 3:
        return f"{entry[0]} {list(entry[1])} in the file, {list(entry[2])} by config.json"
    return str(entry)


def task_of(class_name: str) -> str:
    """Our task for a transformers model class.

    Raises:
        ArchitectureError: a class of a task we do not export.
    """
    for suffix, task in TASK_BY_SUFFIX.items():
        if class_name.endswith(suffix):
            return task
    raise ArchitectureError(f"transformers {class_name} is not an image classifier, object detector or semantic "
                            f"segmenter ({', '.join('*' + s for s in TASK_BY_SUFFIX)}).", stage="load")


def scores_with_softmax(config: Any) -> bool:
    if getattr(config, "model_type", "") in SOFTMAX_DETECTORS:
        return True
    return getattr(config, "use_focal_loss", True) is False
