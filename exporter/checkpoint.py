"""Load a ``.ckpt`` safely and fit its weights into a built model.

A checkpoint is data, never code: every load goes through ``torch.load(weights_only=True)``,
which refuses pickled globals outside PyTorch's allow-list instead of executing them.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporter.errors import CheckpointError, StateDictMismatchError

if TYPE_CHECKING:
    import torch

STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")
MAX_REPORTED_KEYS = 6
MAX_CHECKPOINT_ENV = "AISTUDIO_MAX_CHECKPOINT_MB"
DEFAULT_MAX_CHECKPOINT_MB = 16 * 1024
MAX_COMPRESSION_RATIO = 20  # torch.save stores tensors uncompressed; a high ratio means a zip bomb


def max_checkpoint_bytes() -> int:
    """Largest checkpoint (on disk and unpacked) the loader accepts: ``$AISTUDIO_MAX_CHECKPOINT_MB``."""
    import os

    try:
        return int(float(os.environ.get(MAX_CHECKPOINT_ENV, DEFAULT_MAX_CHECKPOINT_MB)) * 1024 * 1024)
    except ValueError:
        return DEFAULT_MAX_CHECKPOINT_MB * 1024 * 1024


@dataclass(frozen=True)
class LoadedCheckpoint:
    """What a checkpoint file holds, in the form the exporter needs."""

    path: Path
    sha256: str
    state_dict: dict[str, torch.Tensor]
    hyper_parameters: dict[str, Any] = field(default_factory=dict)
    epoch: int | None = None
    global_step: int | None = None
    layout: str = "lightning"  # lightning | state_dict | nested


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (files may be GBs)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def load_checkpoint(path: str | Path) -> LoadedCheckpoint:
    """Load a checkpoint without executing any code it may carry.

    Args:
        path: a Lightning checkpoint, a ``{"state_dict"|"model": ...}`` dict, or a bare state dict.

    Returns:
        The state dict (tensors only), hyper-parameters, epoch and the file's sha256.

    Raises:
        CheckpointError: the file is missing, empty, truncated, not a checkpoint, or holds
            pickled objects outside PyTorch's safe allow-list.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint file {path} does not exist.", stage="load")
    if path.stat().st_size == 0:
        raise CheckpointError(f"Checkpoint {path.name} is empty (0 bytes); re-save it.", stage="load")
    _check_size(path)
    with ThreadPoolExecutor(1) as hashing:
        digest = hashing.submit(file_sha256, path)  # hashlib lets go of the GIL: read while torch loads
        raw = _safe_torch_load(path)
        state_dict, layout = _find_state_dict(raw, path)
        sha256 = digest.result()
    hparams = raw.get("hyper_parameters") if isinstance(raw, dict) else None
    return LoadedCheckpoint(
        path=path,
        sha256=sha256,
        state_dict=state_dict,
        hyper_parameters=dict(hparams) if isinstance(hparams, dict) else {},
        epoch=_int_or_none(raw.get("epoch")) if layout != "state_dict" else None,
        global_step=_int_or_none(raw.get("global_step")) if layout != "state_dict" else None,
        layout=layout,
    )


def _check_size(path: Path) -> None:
    """Refuse files (or zip members) larger than the limit before anything is decompressed."""
    limit = max_checkpoint_bytes()
    size = path.stat().st_size
    if size > limit:
        raise CheckpointError(f"Checkpoint {path.name} is {size / 2**20:.0f} MB, over the {limit / 2**20:.0f} MB "
                              f"limit (raise {MAX_CHECKPOINT_ENV} to allow it).", stage="load")
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError):
        return  # torch.load reports the corruption itself
    unpacked = sum(m.file_size for m in members)
    packed = max(sum(m.compress_size for m in members), 1)
    if unpacked > limit or unpacked / packed > MAX_COMPRESSION_RATIO:
        raise CheckpointError(
            f"Checkpoint {path.name} would unpack to {unpacked / 2**20:.0f} MB from {packed / 2**20:.1f} MB "
            "(a zip bomb, or compressed in a way torch.save never writes); refusing to load it.", stage="load")


def _safe_torch_load(path: Path) -> Any:
    import pickle

    is_zip = zipfile.is_zipfile(path)
    try:
        return _load_data(path, is_zip)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(_unsafe_reason(path, exc), stage="load") from None
    except Exception as exc:  # noqa: BLE001 - torch's readers fail in many ways on bad bytes
        text = str(exc)
        if "central directory" in text or "zip archive" in text or isinstance(exc, EOFError):
            reason = "is truncated or corrupt (its zip archive cannot be read)"
        elif not is_zip:
            reason = "is not a PyTorch checkpoint (neither torch.save zip nor pickle data)"
        else:
            reason = f"could not be read ({text.splitlines()[0][:200]})"
        raise CheckpointError(f"Checkpoint {path.name} {reason}; re-save it with torch.save.",
                              stage="load") from None


def _load_data(path: Path, is_zip: bool) -> Any:
    """``torch.load(weights_only=True)``; a refused file is read again when all it names beyond PyTorch's allow-list
    are a library's enums (``_library_enums``)."""
    import pickle

    import torch

    try:
        # mmap keeps peak memory near one copy of the weights for zip-format files.
        return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError:
        enums = _library_enums(_pickled_globals(path))
        if not enums:
            raise
    with torch.serialization.safe_globals(enums):  # settings stored as a library's enum: data, looked up by value
        return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)


def _unsafe_reason(path: Path, exc: Exception) -> str:
    detail = next((ln.strip().rstrip(".") for ln in str(exc).splitlines() if "unsupported global" in ln.lower()), "")
    pickled = _pickled_globals(path)
    if "ultralytics" in detail or any(name.startswith("ultralytics.") for name in pickled):
        return _ultralytics_reason(path)
    if any(name.startswith("torch.nn.modules.") for name in pickled):  # a whole pickled nn.Module
        return (f"Refused to load {path.name}: {detail}. It is a pickled model object (torch.save(model)), which "
                "is code, not data. Save what we take instead: its weights (torch.save(model.state_dict(), "
                "'weights.pt')) and import them with --model-code path/to/model.py:ClassName, or a program "
                "without code: torch.export.save(torch.export.export(model.eval(), (torch.rand(1, 3, H, W),)), "
                "'model.pt2').")
    if not detail:
        detail = "it is not PyTorch checkpoint data"
    return (f"Refused to load {path.name}: {detail}. Checkpoints are loaded as data only "
            "(weights_only); re-save it with plain tensors and built-in types "
            "(e.g. torch.save({'state_dict': model.state_dict()}, path)).")


# Libraries whose checkpoints store settings as their own enums (anomalib's Lightning hyper-parameters, e.g. Reverse
# Distillation's AnomalyMapGenerationMode): those and only those are allowed, and only when they are Enum classes.
ENUM_LIBRARIES = ("anomalib.",)


def _library_enums(names: list[str]) -> list[type]:
    """The classes ``names`` name when every one is an ``enum.Enum`` of a library in ``ENUM_LIBRARIES`` (unpickling
    one calls the class with a stored value: a lookup, no code of the file's); ``[]`` otherwise."""
    import enum
    import importlib

    found = []
    for name in names:
        module, _, attribute = name.rpartition(".")
        if not name.startswith(ENUM_LIBRARIES):
            return []
        try:
            value = getattr(importlib.import_module(module), attribute)
        except (ImportError, AttributeError):
            return []
        if not (isinstance(value, type) and issubclass(value, enum.Enum)):
            return []
        found.append(value)
    return found


def _pickled_globals(path: Path) -> list[str]:
    """The classes and functions a checkpoint's pickle names, read without running any of it (``[]`` if unreadable)."""
    import torch

    try:
        return torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - a damaged or legacy file: the generic refusal says enough
        return []


def _ultralytics_reason(path: Path) -> str:
    """Ultralytics YOLO ``.pt`` files pickle its classes: the commands that turn one into a source we take."""
    stem = path.stem
    return (f"{path.name} is an Ultralytics YOLO model: a pickle of Ultralytics' classes, which is code, so it is "
            "not loaded (a checkpoint is data only). Turn it into a program with Ultralytics' own export, then "
            f"import that: `yolo export model={path.name} format=torchscript nms=True` (boxes, scores and classes "
            f"per image, {stem}.torchscript), then `python -m exporter import {stem}.torchscript --project P "
            "--task object_detection --input-size 3,640,640 --class-names …`. With model code allowed, a module "
            "of yours that builds the model with ultralytics installed imports it through --model-code.")


def _find_state_dict(raw: Any, path: Path) -> tuple[dict[str, Any], str]:
    if not isinstance(raw, dict) or not raw:
        raise CheckpointError(
            f"Checkpoint {path.name} holds a {type(raw).__name__}, not a dict with a state dict.",
            stage="load")
    if _is_tensor_dict(raw):
        return dict(raw), "state_dict"
    for key in STATE_DICT_KEYS:
        value = raw.get(key)
        if isinstance(value, dict) and value and _is_tensor_dict(value):
            return dict(value), "lightning" if key == "state_dict" else "nested"
    raise CheckpointError(
        f"Checkpoint {path.name} has no state dict: expected a 'state_dict' or 'model' entry "
        f"of tensors, found keys {sorted(map(str, raw))[:8]}.", stage="load")


def _is_tensor_dict(value: dict[Any, Any]) -> bool:
    import torch

    return all(isinstance(k, str) for k in value) and all(
        isinstance(v, torch.Tensor) for v in value.values())


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def strip_prefix(state_dict: dict[str, Any], expected: set[str]) -> tuple[dict[str, Any], str]:
    """Remove the wrapper prefix (``model.``, ``net.``, ``module.``...) that best matches.

    Tries no prefix and every one- and two-level dotted prefix present in the keys, and keeps
    the one whose stripped keys overlap the model's keys most.

    Returns:
        The stripped state dict (only keys under the prefix) and the prefix used.
    """
    candidates = {""}
    for key in state_dict:
        parts = key.split(".")
        candidates.update(".".join(parts[:i]) + "." for i in (1, 2) if len(parts) > i)

    def overlap(prefix: str) -> int:
        return sum(1 for k in state_dict if k.startswith(prefix) and k[len(prefix):] in expected)

    best = max(sorted(candidates, key=len), key=overlap)
    return {k[len(best):]: v for k, v in state_dict.items() if k.startswith(best)}, best


# torch.nn.init's fillers: a model built only to receive every weight from a checkpoint need not draw them first
_INITIALISERS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
                 "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_",
                 "sparse_")
_INITIALISING = threading.Lock()


@contextlib.contextmanager
def weights_to_come():
    """Build a model without drawing random weights: ``load_weights`` (strict) fills each one next, and refuses
    a checkpoint that misses any, so none is ever used as drawn (resnet50: 0.2 s; vit_l_16: seconds)."""
    from torch.nn import init

    with _INITIALISING:  # torch.nn.init is the process's: one build at a time patches it (an API server's threads)
        originals = {name: getattr(init, name) for name in _INITIALISERS if hasattr(init, name)}
        for name in originals:
            setattr(init, name, _keep)
        try:
            yield
        finally:
            for name, original in originals.items():
                setattr(init, name, original)


def _keep(tensor: Any, *_: Any, **__: Any) -> Any:
    return tensor


def load_weights(model: torch.nn.Module, state_dict: dict[str, Any]) -> str:
    """Load a checkpoint's weights into ``model``, stripping a wrapper prefix if needed.

    Returns:
        The prefix that was stripped (``""`` when none).

    Raises:
        StateDictMismatchError: naming missing keys, unexpected keys and shape clashes.
    """
    expected = model.state_dict()
    stripped, prefix = strip_prefix(state_dict, set(expected))
    missing = sorted(set(expected) - set(stripped))
    unexpected = sorted(set(stripped) - set(expected))
    clashes = [
        f"{k}: checkpoint {list(stripped[k].shape)} vs model {list(v.shape)}"
        for k, v in expected.items() if k in stripped and stripped[k].shape != v.shape
    ]
    if missing or unexpected or clashes:
        raise StateDictMismatchError(_mismatch_message(missing, unexpected, clashes), stage="build")
    model.load_state_dict(_with_metadata(stripped, state_dict, expected, prefix), strict=True)
    return prefix


def _with_metadata(stripped: dict[str, Any], original: dict[str, Any], expected: Any, prefix: str) -> Any:
    """Carry the per-module ``_metadata`` (layer versions) across the prefix strip.

    Some modules (MNASNet, BatchNorm) read their version from it while loading; the model's own
    metadata is the fallback for a checkpoint that lost it.
    """
    from collections import OrderedDict

    result = OrderedDict(stripped)
    metadata = dict(getattr(expected, "_metadata", {}) or {})
    root = prefix[:-1]
    for key, value in (getattr(original, "_metadata", None) or {}).items():
        if not prefix:
            metadata[key] = value
        elif key == root:
            metadata[""] = value
        elif key.startswith(prefix):
            metadata[key[len(prefix):]] = value
    result._metadata = metadata  # type: ignore[attr-defined]
    return result


def _mismatch_message(missing: list[str], unexpected: list[str], clashes: list[str]) -> str:
    def listing(label: str, items: list[str]) -> str:
        more = f" (+{len(items) - MAX_REPORTED_KEYS} more)" if len(items) > MAX_REPORTED_KEYS else ""
        return f"{label} ({len(items)}): {', '.join(items[:MAX_REPORTED_KEYS])}{more}"

    parts = [listing(lbl, items) for lbl, items in
             (("shape clashes", clashes), ("missing keys", missing), ("unexpected keys", unexpected))
             if items]
    hint = ("check num_classes / num_outputs and input_size" if clashes
            else "check the architecture name")
    return f"Checkpoint weights do not fit the model — {'; '.join(parts)}. Hint: {hint}."
