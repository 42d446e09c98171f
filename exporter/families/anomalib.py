"""anomalib 2.x Lightning checkpoints (PaDiM, PatchCore, EfficientAD, STFPM, FastFlow, Reverse Distillation) as
``anomalib/<Model>``.

The checkpoint does not name its class: its state dict does (PaDiM's Gaussian, PatchCore's memory bank, …), or
``--architecture anomalib/<Model>``. The exported graph is anomalib's own module end to end, as its
``Engine.export`` writes it: the pre-processor (resize to its size, ImageNet normalisation; the export transform),
the model, and the post-processor, whose min/max normalisation puts the image threshold at 0.5. So the file takes
images in [0, 1] at any size and answers ``anomaly_map [N, 1, H', W']`` and ``score [N]`` normalised as anomalib's
predictions are; the threshold (0.5 after normalisation) goes into the file's metadata and evaluation uses it
instead of fitting one on the labelled set.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from exporter.errors import ArchitectureError
from exporter.families.base import Family, Imported
from exporter.models.spec import IDENTITY_NORMALIZATION

if TYPE_CHECKING:
    from pathlib import Path

    from torch import nn

    from exporter.models.spec import ModelSpec

MARKER = "post_processor._image_threshold"  # anomalib 2.x keeps its post-processor in the state dict
# A state-dict key that only this model has, in the order they are tried.
FINGERPRINTS = (("Padim", "model.gaussian.inv_covariance"), ("Patchcore", "model.memory_bank"),
                ("EfficientAd", "model.ae."), ("Stfpm", "model.student_model."),
                ("Fastflow", "model.fast_flow_blocks."), ("ReverseDistillation", "model.bottleneck."))
NORMALISED_THRESHOLD = 0.5  # the post-processor maps the image threshold here
DEFAULT_SIZE = 256
_BUILDING = threading.Lock()  # timm.create_model is the process's: one build at a time patches it


def library() -> Any:
    try:
        import anomalib.models
    except ImportError:  # pragma: no cover - pinned in requirements.txt
        raise ArchitectureError("anomalib/<Model> checkpoints need anomalib: pip install anomalib", stage="build") \
            from None
    return anomalib.models


class Anomalib(Family):
    prefix = "anomalib/"
    library = "anomalib"

    def recognizes(self, state_dict: dict[str, Any]) -> bool:
        return MARKER in state_dict

    def from_state_dict(self, state_dict: dict[str, Any], architecture: str, options: dict[str, Any],
                        sha256: str, hyper_parameters: dict[str, Any] | None = None) -> Imported:
        if MARKER not in state_dict:
            raise ArchitectureError(f"{architecture}: the checkpoint holds no anomalib post-processor ({MARKER}); "
                                    "save it with anomalib 2.x (Engine.fit, then the Lightning checkpoint).",
                                    stage="load")
        name = architecture.removeprefix(self.prefix) if architecture else model_of(state_dict)
        known = [model for model, _ in FINGERPRINTS]
        if name not in known:
            raise ArchitectureError(f"anomalib model {name!r} is not one we export; we take {', '.join(known)}.",
                                    stage="load")
        settings = {k: v for k, v in (hyper_parameters or {}).items() if isinstance(v, (str, int, float, bool,
                                                                                        list, type(None)))}
        hp = {"task": "anomaly_detection", "architecture": self.prefix + name,
              "input_size": [3, DEFAULT_SIZE, DEFAULT_SIZE], "normalization": dict(IDENTITY_NORMALIZATION),
              "anomalib_hparams": settings, "threshold": NORMALISED_THRESHOLD}
        return Imported(state_dict, hp, sha256)

    def build(self, spec: ModelSpec) -> nn.Module:
        name = spec.architecture.removeprefix(self.prefix)
        model_class = getattr(library(), name, None)
        if model_class is None:
            raise ArchitectureError(f"anomalib has no model {name!r}.", stage="build")
        settings = dict(spec.extra.get("anomalib_hparams") or {})
        if "pre_trained" in settings:
            settings["pre_trained"] = False  # the backbone's weights come from the checkpoint, never a download
        try:
            with no_pretrained_downloads():
                return model_class(**settings)
        except (TypeError, ValueError) as exc:
            raise ArchitectureError(f"anomalib {name}({settings}) cannot be built: {exc}", stage="build") from None

    def load(self, model: nn.Module, state_dict: dict[str, Any]) -> None:
        """anomalib sizes some buffers when it fits (PaDiM's Gaussian, PatchCore's memory bank): size them as the
        checkpoint's, then load strictly."""
        from exporter.checkpoint import load_weights

        for key, tensor in model.state_dict().items():
            if tensor.numel() == 0 and key in state_dict and state_dict[key].numel():
                owner_path, _, buffer = key.rpartition(".")
                model.get_submodule(owner_path).register_buffer(buffer, state_dict[key].clone())
        load_weights(model, state_dict)

    def needs(self, task: str, architecture: str) -> frozenset[str]:
        from exporter import capabilities

        # every model: the post-processor's normalisation (torch.where over comparisons with its thresholds);
        # PatchCore: the nearest neighbours in its memory bank, a top-k
        return frozenset({capabilities.SELECT} | ({capabilities.TOPK_GATHER} if architecture.endswith("Patchcore")
                                                  else set()))

    def wrap(self, model: nn.Module, spec: ModelSpec, options: dict[str, Any]) -> nn.Module:
        from exporter.families.outputs import AnomalibOutputs

        return AnomalibOutputs(model).eval()

    def yardstick(self, module: nn.Module, method: str, ours: list[Path], pool: Any, workdir: Path) -> dict[str, Any]:
        from exporter.families.yardstick import beside_anomalib

        return beside_anomalib(module, method, ours, pool, workdir)


@contextlib.contextmanager
def no_pretrained_downloads() -> Iterator[None]:
    """Build an anomalib model without fetching a pre-trained network: STFPM builds its teacher with
    ``pre_trained=True`` whatever it is given, which downloads ImageNet weights (an offline machine cannot). Every
    weight comes from the checkpoint next (``load`` is strict), so ``timm.create_model`` is asked for none."""
    import timm

    with _BUILDING:
        original = timm.create_model

        def create_model(*args: Any, **kwargs: Any) -> Any:
            return original(*args, **{**kwargs, "pretrained": False})

        timm.create_model = create_model
        try:
            yield
        finally:
            timm.create_model = original


def model_of(state_dict: dict[str, Any]) -> str:
    """The anomalib model whose keys these are.

    Raises:
        ArchitectureError: none matches: name it.
    """
    for name, key in FINGERPRINTS:
        if any(k.startswith(key) for k in state_dict):
            return name
    raise ArchitectureError("An anomalib checkpoint of a model we do not recognise: pass --architecture "
                            f"anomalib/<Model> ({', '.join(n for n, _ in FINGERPRINTS)}).", stage="load")
