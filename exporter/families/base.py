"""What every model family does, and reading what a library saved (a folder, a zip of one, or a state dict)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from exporter.errors import ArchitectureError, CheckpointError, one_line

if TYPE_CHECKING:
    from collections.abc import Iterator

    from torch import nn

    from exporter.models.spec import ModelSpec

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


@dataclass
class Imported:
    """A family's model read into our checkpoint's terms: the weights and the hyper-parameters that rebuild it."""

    state_dict: dict[str, Any]
    hyper_parameters: dict[str, Any]
    sha256: str  # of what was read (the folder's files in name order, or the state dict's file)
    files: list[str] = field(default_factory=list)
    also: tuple[str, ...] = ()  # other tasks the model can be imported as (``--task``, or the project's)


class Family:
    """A library's models: recognised at import, built and wrapped at export (subclasses fill in)."""

    prefix: str = ""
    library: str = ""  # the name formats know its own exporter by (``ExportFormat.library_exporters``)

    def recognize(self, folder: Path, config: dict[str, Any]) -> Imported | None:
        """This library's ``save_pretrained`` folder read into a checkpoint, or None when it is not one of ours.

        Raises:
            ArchitectureError / CheckpointError: it is this library's, but not a model we can take (says why).
        """
        return None

    def recognizes(self, state_dict: dict[str, Any]) -> bool:
        """True when a checkpoint's state dict is this library's beyond doubt (anomalib's post-processor)."""
        return False

    def from_state_dict(self, state_dict: dict[str, Any], architecture: str, options: dict[str, Any],
                        sha256: str, hyper_parameters: dict[str, Any] | None = None) -> Imported:
        """A checkpoint file's state dict of ``architecture`` (options such as the encoder come from the user)."""
        raise ArchitectureError(f"{architecture} models import from their save_pretrained folder (config.json "
                                "and weights, or a zip of it), not from a bare state dict.", stage="load")

    def build(self, spec: ModelSpec) -> nn.Module:
        raise NotImplementedError

    def load(self, model: nn.Module, state_dict: dict[str, Any]) -> None:
        """The checkpoint's weights into ``model``, strictly (``StateDictMismatchError`` names what differs)."""
        from exporter.checkpoint import load_weights

        load_weights(model, state_dict)

    def wrap(self, model: nn.Module, spec: ModelSpec, options: dict[str, Any]) -> nn.Module:
        raise NotImplementedError

    def needs(self, task: str, architecture: str) -> frozenset[str]:
        """What this architecture's exported graphs need (``exporter.capabilities``)."""
        return frozenset()

    def yardstick(self, module: nn.Module, method: str, ours: list[Path], pool: Any, workdir: Path) -> dict[str, Any]:
        """The file the library's own exporter (its module's ``method``, from the format's ``library_exporters``)
        writes of ``module``, beside ours (the export's files): the record's ``yardstick``."""
        raise NotImplementedError

    def check_outputs(self, outputs: Any, spec: ModelSpec) -> str:
        """What is wrong with the wrapped model's outputs on one image, saying what was expected ("": nothing)."""
        return ""


def folder_zip(path: Path) -> bool:
    """A zip of a saved folder (it holds a config.json) — not PyTorch's own zip format of a ``.pt`` file."""
    if not zipfile.is_zipfile(path):
        return False
    with contextlib.suppress(zipfile.BadZipFile, OSError), zipfile.ZipFile(path) as archive:
        return any(PurePosixPath(name).name == "config.json" for name in archive.namelist())
    return False


@contextlib.contextmanager
def opened(source: Path) -> Iterator[Path]:
    """The folder itself, or a zip's content unpacked to a scratch folder (the folder inside it, if only one)."""
    from exporter.archives import unpacked
    from exporter.checkpoint import MAX_CHECKPOINT_ENV, max_checkpoint_bytes

    with unpacked(source, limit=max_checkpoint_bytes(), error=CheckpointError,
                  hint=f"raise {MAX_CHECKPOINT_ENV} to allow it") as folder:
        found = [p.parent for p in folder.rglob("config.json")]
        yield found[0] if len(found) == 1 and folder != source else folder


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a saved folder.

    Raises:
        CheckpointError: missing, not JSON, or not an object.
    """
    if not path.is_file():
        raise CheckpointError(f"{path.name} is missing: a save_pretrained folder holds config.json beside its "
                              "weights.", stage="load")
    try:
        value = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path.name} is not valid JSON: {one_line(exc)}", stage="load") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path.name} holds {type(value).__name__}, not a JSON object.", stage="load")
    return value


def read_weights(folder: Path) -> tuple[dict[str, Any], list[str], str]:
    """The folder's weights (safetensors, sharded safetensors, or a ``pytorch_model.bin`` loaded without
    code), the files read, and one sha256 over them.

    Raises:
        CheckpointError: no weights, or a file that does not load.
    """
    import torch

    if (folder / "model.safetensors.index.json").is_file():
        index = read_json(folder / "model.safetensors.index.json")
        files = sorted(set((index.get("weight_map") or {}).values()))
    else:
        files = [next((name for name in WEIGHT_FILES if (folder / name).is_file()), "")]
    if not files or not files[0]:
        raise CheckpointError(f"No weights beside config.json: expected one of {', '.join(WEIGHT_FILES)}.",
                              stage="load")
    state_dict: dict[str, Any] = {}
    digest = hashlib.sha256()
    for name in files:
        path = folder / name
        try:
            if name.endswith(".bin"):
                loaded = torch.load(path, map_location="cpu", weights_only=True)
            else:
                from safetensors.torch import load_file

                loaded = load_file(path)
        except Exception as exc:  # noqa: BLE001 - any unreadable weights file is the user's to fix
            raise CheckpointError(f"{name} does not load: {one_line(exc, 200)}", stage="load") from None
        state_dict.update(loaded)
        digest.update(path.read_bytes())
    return state_dict, files, digest.hexdigest()


def input_size_from(size: Any, fallback: int) -> tuple[int, int, int]:
    """An image processor's ``size`` (``{"height", "width"}``, ``{"shortest_edge"}``, an int) as C, H, W."""
    if isinstance(size, int):
        return (3, size, size)
    if isinstance(size, dict):
        if size.get("height") and size.get("width"):
            return (3, int(size["height"]), int(size["width"]))
        if edge := size.get("shortest_edge"):
            return (3, int(edge), int(edge))
    return (3, fallback, fallback)
