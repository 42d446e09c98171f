"""Code-free programs as sources: a ``torch.export`` program (``.pt2``, from ``torch.export.save``) as
``program/pt2`` and a TorchScript module (``torch.jit.save``) as ``program/torchscript``.

The program is the model: it is kept whole in the checkpoint (its bytes as one uint8 tensor, so it travels wherever
the checkpoint goes, Ray workers included), loaded as the reference for validation and evaluation, and put into
the task's output convention (``outputs.ContractOutputs``). Task, class names, input size and normalisation come
from the user, else from an ``aistudio.json`` the program carries among its extra files
(``torch.export.save(..., extra_files={"aistudio.json": ...})``, ``torch.jit.save(..., _extra_files=...)``);
a ``.pt2`` also says its input size (its example input).

A TorchScript module cannot be traced by ``torch.export``: ONNX comes from the TorchScript exporter, and every
format made with ``torch.export`` (pt2, ExecuTorch, LiteRT) refuses it (``capabilities.TORCHSCRIPT_PROGRAM``).
"""

from __future__ import annotations

import hashlib
import io
import json
import types
import zipfile
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from exporter import capabilities
from exporter.errors import ArchitectureError, CheckpointError, one_line
from exporter.families.base import Family, Imported

if TYPE_CHECKING:
    from torch import nn

    from exporter.models.spec import ModelSpec

PROGRAM_KEY = "program"  # the state dict's one tensor: the file's bytes
PT2, TORCHSCRIPT = "program/pt2", "program/torchscript"  # the architectures, one per kind of program
METADATA_FILE = "aistudio.json"
PROGRAM_TASKS = ("classification", "regression", "segmentation", "object_detection")
FIELDS = ("task", "class_names", "num_classes", "input_size", "normalization", "fixed_batch")


def program_kind(path: Path) -> str | None:
    """``program/pt2`` for a ``torch.export.save`` archive, ``program/torchscript`` for a ``torch.jit.save`` one,
    else None."""
    if not path.is_file() or not zipfile.is_zipfile(path):
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            names = [PurePosixPath(n).parts[1:] for n in archive.namelist()]
    except (zipfile.BadZipFile, OSError):
        return None
    if any(parts[:1] == ("archive_format",) or parts[:1] == ("models",) for parts in names):
        return PT2
    if any(parts[:2] == ("code", "__torch__") for parts in names):
        return TORCHSCRIPT
    return None


class Programs(Family):
    prefix = "program/"

    def read(self, path: Path, kind: str, given: dict[str, Any]) -> Imported:
        """The program file as a checkpoint: its bytes, and what it or the user says about it.

        Raises:
            CheckpointError: the file does not load as such a program.
            ArchitectureError: a task programs cannot take, or no task named.
        """
        import torch

        data = path.read_bytes()
        hp = {**_described(path, kind, data), **{k: v for k, v in given.items() if k in FIELDS and v is not None}}
        task = hp.get("task")
        if kind == TORCHSCRIPT and "input_size" not in hp:
            raise ArchitectureError("A TorchScript file does not say its input size: pass it (--input-size C,H,W), or "
                                    f"save it with {METADATA_FILE} among the extra files.", stage="load")
        if task not in PROGRAM_TASKS:
            raise ArchitectureError(f"Name the program's task (--task): one of {', '.join(PROGRAM_TASKS)}"
                                    f"{'' if not task else f'; {task} programs are not taken yet'}.", stage="load")
        if hp.get("class_names"):
            hp["num_classes"] = len(hp["class_names"])
        hp.update(architecture=kind, program_sha256=hashlib.sha256(data).hexdigest())
        tensor = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        return Imported({PROGRAM_KEY: tensor}, hp, hp["program_sha256"], [path.name])

    def build(self, spec: ModelSpec) -> nn.Module:
        from torch import nn

        return nn.Module()  # the program arrives with the weights (load)

    def load(self, model: nn.Module, state_dict: dict[str, Any]) -> None:
        if PROGRAM_KEY not in state_dict:
            raise CheckpointError("The checkpoint holds no program (an imported .pt2 or TorchScript keeps its "
                                  "bytes as 'program'); import the program file again.", stage="load")
        data = state_dict[PROGRAM_KEY].numpy().tobytes()
        model.program = _load(_kind_of_bytes(data), data)[0]

    def wrap(self, model: nn.Module, spec: ModelSpec, options: dict[str, Any]) -> nn.Module:
        import torch

        from exporter.families.outputs import ContractOutputs

        wrapped = ContractOutputs(model.program, spec.task, options).eval()
        if spec.architecture == TORCHSCRIPT:  # a ScriptModule inside a module: trace the whole, so
            with torch.no_grad():  # the TorchScript ONNX exporter and tracers see one program
                wrapped = torch.jit.trace(wrapped, torch.rand(1, *spec.input_size), strict=False, check_trace=False)
        return wrapped

    def needs(self, task: str, architecture: str) -> frozenset[str]:
        return frozenset({capabilities.TORCHSCRIPT_PROGRAM}) if architecture == TORCHSCRIPT else frozenset()

    def check_outputs(self, outputs: Any, spec: ModelSpec) -> str:
        from exporter.families.outputs import check_contract

        return check_contract(outputs, spec.task, spec.num_classes, spec.input_size)


def describe(path: Path, kind: str) -> dict[str, Any]:
    """What a program file says about itself (``importer.inspect_checkpoint``'s answer).

    Raises:
        CheckpointError: it does not load.
    """
    data = path.read_bytes()
    hp = {**_described(path, kind, data), "architecture": kind}
    return {"hyper_parameters": hp, "tensors": 0, "sha256": hashlib.sha256(data).hexdigest(),
            "candidates": [{"architecture": hp["architecture"], "confidence": 1.0, "source": "the program file"}]}


def _described(path: Path, kind: str, data: bytes) -> dict[str, Any]:
    """The fields the program's ``aistudio.json`` holds, and a ``.pt2``'s example input size."""
    try:
        program, meta = _load(kind, data)
    except Exception as exc:  # noqa: BLE001 - any unreadable program is the user's to fix
        loader = "torch.export.load" if kind == PT2 else "torch.jit.load"
        raise CheckpointError(f"{path.name} does not load with {loader}: {one_line(exc, 240)}",
                              stage="load") from None
    hp = {k: v for k, v in meta.items() if k in FIELDS and v is not None}
    if "num_classes" not in hp and isinstance(hp.get("class_names"), list):
        hp["num_classes"] = len(hp["class_names"])
    example = _example_shape(program) if kind == PT2 else None
    if example and "input_size" not in hp:
        hp["input_size"] = [int(d) for d in example[1:]]
    if example and isinstance(example[0], int):  # exported without a dynamic batch: it takes only that batch
        hp["fixed_batch"] = example[0]
    return hp


def _kind_of_bytes(data: bytes) -> str:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return TORCHSCRIPT if any(PurePosixPath(n).parts[1:3] == ("code", "__torch__")
                                  for n in archive.namelist()) else PT2


def _load(kind: str, data: bytes) -> tuple[Any, dict[str, Any]]:
    """The program (a module to call) and the ``aistudio.json`` it carries ({} when none)."""
    import torch

    extra = {METADATA_FILE: ""}
    if kind == PT2:
        program = torch.export.load(io.BytesIO(data), extra_files=extra).module()
        # An exported program is fixed in the mode it was exported in: train()/eval() (which it refuses) change
        # nothing, so they answer as no-ops and the program sits inside our wrappers like any module.
        program.train = types.MethodType(lambda self, mode=True: self, program)
    else:
        program = torch.jit.load(io.BytesIO(data), map_location="cpu", _extra_files=extra).eval()
    text = extra[METADATA_FILE]
    text = text.decode() if isinstance(text, bytes) else text
    try:
        meta = json.loads(text) if text else {}
    except ValueError:
        meta = {}
    return program, meta if isinstance(meta, dict) else {}


def _example_shape(program: Any) -> tuple[Any, ...] | None:
    """The shape of the first image input the program was exported with, its batch an int when it is fixed (the
    unlifted module's placeholders are its inputs)."""
    for node in program.graph.nodes:
        value = node.meta.get("val") if node.op == "placeholder" else None
        if value is not None and len(value.shape) == 4:
            return tuple(value.shape)
    return None
