"""segmentation_models_pytorch: any architecture over any encoder, as ``smp/<Arch>`` (Unet, UnetPlusPlus, FPN,
DeepLabV3Plus, …), from its ``save_pretrained`` folder (``config.json`` with ``_model_class``, weights) or from a
state dict with ``--architecture smp/<Arch> --option encoder=<name>``.

The class count is read from the segmentation head's weights. A one-logit (binary) model becomes two classes —
background, foreground — by pairing its logit with a constant 0: the argmax picks the foreground exactly where the
sigmoid passes 0.5. smp encoders are trained on ImageNet's normalisation; H and W must be multiples of
2^encoder_depth (32 by default).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporter.errors import ArchitectureError, InvalidOptionError
from exporter.families.base import Family, Imported, read_weights

if TYPE_CHECKING:
    from torch import nn

    from exporter.models.spec import ModelSpec

HEAD = "segmentation_head.0.weight"
DEFAULT_SIZE = 256
BINARY_CLASSES = ["background", "foreground"]


def library() -> Any:
    try:
        import segmentation_models_pytorch
    except ImportError:  # pragma: no cover - pinned in requirements.txt
        raise ArchitectureError("smp/<Arch> models need segmentation_models_pytorch: pip install "
                                "segmentation-models-pytorch", stage="build") from None
    return segmentation_models_pytorch


def architectures() -> list[str]:
    """Every smp architecture class (``smp.Unet`` …)."""
    return sorted({cls.__name__ for cls in library().MODEL_ARCHITECTURES_MAPPING.values()})


class SegmentationModels(Family):
    prefix = "smp/"

    def recognize(self, folder: Path, config: dict[str, Any]) -> Imported | None:
        if "_model_class" not in config:
            return None
        state_dict, files, sha = read_weights(folder)
        settings = {k: v for k, v in config.items() if not k.startswith("_")}
        imported = self._imported(state_dict, str(config["_model_class"]), settings, sha)
        imported.files = ["config.json", *files]
        return imported

    def from_state_dict(self, state_dict: dict[str, Any], architecture: str, options: dict[str, Any],
                        sha256: str, hyper_parameters: dict[str, Any] | None = None) -> Imported:
        unknown = sorted(set(options) - {"encoder", "encoder_depth"})
        if unknown or not options.get("encoder"):
            raise InvalidOptionError(f"An smp state dict needs --option encoder=<name> (e.g. resnet34)"
                                     f"{'; unknown: ' + ', '.join(unknown) if unknown else ''}.", stage="load")
        settings = {"encoder_name": str(options["encoder"])}
        if options.get("encoder_depth"):
            settings["encoder_depth"] = int(options["encoder_depth"])
        from exporter.checkpoint import strip_prefix

        stripped, _ = strip_prefix(state_dict, {HEAD, "encoder.conv1.weight"})
        return self._imported(stripped, architecture.removeprefix(self.prefix), settings, sha256)

    def _imported(self, state_dict: dict[str, Any], name: str, settings: dict[str, Any], sha: str) -> Imported:
        if name not in architectures():
            raise ArchitectureError(f"segmentation_models_pytorch has no architecture {name!r}; it has "
                                    f"{', '.join(architectures())}.", stage="load")
        head = state_dict.get(HEAD)
        if head is None:
            raise ArchitectureError(f"The weights hold no {HEAD}: not an smp segmentation model.", stage="load")
        classes = int(head.shape[0])
        settings = {**settings, "encoder_weights": None, "classes": classes, "activation": None}
        class_names = BINARY_CLASSES if classes == 1 else [f"class_{i}" for i in range(classes)]
        hp = {"task": "segmentation", "architecture": self.prefix + name, "num_classes": len(class_names),
              "class_names": class_names, "input_size": [int(settings.get("in_channels", 3)), DEFAULT_SIZE,
                                                         DEFAULT_SIZE],
              "smp_config": settings}
        return Imported(state_dict, hp, sha)

    def build(self, spec: ModelSpec) -> nn.Module:
        settings = dict(spec.extra.get("smp_config") or {})
        name = spec.architecture.removeprefix(self.prefix)
        model_class = getattr(library(), name, None)
        if model_class is None or not settings:
            raise ArchitectureError(f"segmentation_models_pytorch has no {name!r}, or the checkpoint carries no "
                                    "smp_config.", stage="build")
        stride = 2 ** int(settings.get("encoder_depth", 5))
        if spec.input_size[1] % stride or spec.input_size[2] % stride:
            raise InvalidOptionError(f"{name} takes heights and widths that are multiples of {stride}; "
                                     f"{list(spec.input_size)} is not.", stage="build")
        try:
            return model_class(**settings)
        except (TypeError, ValueError, KeyError) as exc:
            raise ArchitectureError(f"smp.{name}({settings}) cannot be built: {exc}", stage="build") from None

    def wrap(self, model: nn.Module, spec: ModelSpec, options: dict[str, Any]) -> nn.Module:
        from exporter.families.outputs import SmpOutputs

        return SmpOutputs(model, options).eval()
