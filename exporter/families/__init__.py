"""Model families of other libraries: Hugging Face transformers (``hf/<Class>``), segmentation_models_pytorch
(``smp/<Arch>``) and anomalib (``anomalib/<Model>``), imported from what those libraries save and exported like our
own models; and the user's own models: code-free programs (``program/pt2``, ``program/torchscript``) and the
user's own model code (``code/<Class>``).

A family owns the architectures named with its prefix. At import it reads what its library saves — a
``save_pretrained`` folder (or a zip of one), or a state dict plus the architecture's options — into our checkpoint
(weights + hyper-parameters: task, classes, input size, normalisation and the library's own config); then it builds
the module from that checkpoint, wraps it in the task's output conventions (post-processing inside the graph), and
says what its graphs need (``exporter.capabilities``), so formats refuse what they cannot carry before anything
runs. ``exporter.pipeline.build_from`` asks :func:`owner` before the task's own builders.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from exporter.errors import CheckpointError
from exporter.families.base import Family, Imported, folder_zip, opened, read_json

if TYPE_CHECKING:
    from pathlib import Path


def families() -> tuple[Family, ...]:
    from exporter.families.anomalib import Anomalib
    from exporter.families.code import UserCode
    from exporter.families.hf import Transformers
    from exporter.families.program import Programs
    from exporter.families.smp import SegmentationModels

    return (Transformers(), SegmentationModels(), Anomalib(), Programs(), UserCode())


def owner(architecture: str | None) -> Family | None:
    """The family whose prefix names ``architecture`` (None for torchvision, timm and our own)."""
    return next((f for f in families() if architecture and architecture.startswith(f.prefix)), None)


def needs(task: str | None, model: dict | None) -> frozenset[str] | None:
    """What this model's exported graphs need, when its family says (None: the task's own needs)."""
    family = owner((model or {}).get("architecture"))
    return family.needs(task or "", (model or {}).get("architecture") or "") if family else None


def read_source(source: Path, architecture: str | None, options: dict[str, Any]) -> Imported | None:
    """What a family makes of ``source``: a ``save_pretrained`` folder or a zip of one, or a state dict file
    whose ``architecture`` a family owns; None for an ordinary checkpoint.

    Raises:
        CheckpointError: a folder or zip no family reads, or a broken ``config.json`` or weights file.
        ArchitectureError: a family's model we cannot take.
    """
    if source.is_file() and not folder_zip(source):
        family = owner(architecture)
        if family is None and architecture:  # torchvision, timm or ours, named
            return None
        from exporter.checkpoint import load_checkpoint

        ckpt = load_checkpoint(source)
        family = family or next((f for f in families() if f.recognizes(ckpt.state_dict)), None)
        if family is None:
            return None
        return family.from_state_dict(ckpt.state_dict, architecture or "", options, ckpt.sha256,
                                      dict(ckpt.hyper_parameters))
    with opened(source) as folder:
        config = read_json(folder / "config.json")
        for family in families():
            if (imported := family.recognize(folder, config)) is not None:
                return imported
    raise CheckpointError("config.json describes no model of transformers or segmentation_models_pytorch "
                          "(no 'architectures' or '_model_class' in it).", stage="load")


__all__ = ["Family", "Imported", "families", "needs", "owner", "read_source"]
