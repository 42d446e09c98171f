"""Import a checkpoint trained elsewhere as a new experiment (dashboard, CLI and API share this).

Accepted: Lightning checkpoints (hyper-parameters read from the file), bare state dicts,
``{"model": ...}`` / ``{"state_dict": ...}`` dicts, with wrapper prefixes stripped; and the model families'
``save_pretrained`` folders or zips of them (transformers, segmentation_models_pytorch: ``exporter.families``),
read into a checkpoint of ours. Whatever the file does not say (task, architecture, classes, input size) comes
from the request, and for classifiers the architecture and class count can be detected from the weights.

Nothing is written until the file loads safely (``weights_only``), the architecture accepts
every tensor and a forward pass at the input size runs; then the experiment folder is built
aside and renamed into place, so a failed import leaves the workspace exactly as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter.errors import ArchitectureError, InvalidOptionError, NotFoundError, UsageError, one_line
from exporter.store import utc_now
from exporter.tasks import DEFAULT_TASK, task_traits
from exporter.workspace import Workspace, check_id, write_experiment_json, write_project_json

AUTO_PICK_CONFIDENCE = 0.99  # below this, the user must choose among the detected candidates
UPLOAD_TTL_S = 24 * 3600  # staged uploads nobody imported are removed after this


@dataclass(frozen=True)
class ImportRequest:
    """What the user tells us about the file (every field optional except the project)."""

    project_id: str
    task: str | None = None
    architecture: str | None = None
    num_classes: int | None = None
    input_size: tuple[int, int, int] | None = None
    name: str | None = None
    create_project: bool = False
    project_name: str | None = None
    options: dict[str, Any] = field(default_factory=dict)  # a family's build options (smp: encoder=resnet34)
    class_names: tuple[str, ...] | None = None
    normalization: dict[str, list[float]] | None = None
    model_code: str | None = None  # path/to/model.py:Class or package.module:Class (exporter.families.code)
    model_kwargs: dict[str, Any] | None = None
    code_root: str | None = None
    allow_code: bool = False  # the CLI: the user's choice; the API and dashboard: AISTUDIO_ALLOW_MODEL_CODE=1


def inspect_checkpoint(path: Path) -> dict[str, Any]:
    """What the file says about itself and which architectures its weights fit (no writes).

    Raises:
        CheckpointError: the file is not a loadable, safe checkpoint.
    """
    from exporter.checkpoint import load_checkpoint
    from exporter.families import read_source
    from exporter.families.program import describe, program_kind
    from exporter.models.recognize import detect_architecture

    if kind := program_kind(path):  # a .pt2 or TorchScript program: what its metadata says
        return describe(path, kind)
    if imported := read_source(path, None, {}):  # a transformers / smp folder or zip: it says what it is
        hp = {k: v for k, v in imported.hyper_parameters.items() if k not in FAMILY_KEYS}
        return {"hyper_parameters": _jsonable(hp), "tensors": len(imported.state_dict), "sha256": imported.sha256,
                "candidates": [{"architecture": hp["architecture"], "confidence": 1.0,
                                "source": "config.json" if imported.files else "the state dict's keys"}]}
    ckpt = load_checkpoint(path)
    hp = dict(ckpt.hyper_parameters)
    candidates = [] if hp.get("architecture") else [c.to_dict() for c in detect_architecture(ckpt.state_dict)]
    return {"hyper_parameters": _jsonable(hp), "tensors": len(ckpt.state_dict), "sha256": ckpt.sha256,
            "candidates": candidates}


# A family's own settings: kept in the checkpoint, not shown.
FAMILY_KEYS = ("hf_config", "hf_processor", "smp_config", "anomalib_hparams")


def import_checkpoint(workspace: Workspace, request: ImportRequest, source: Path,
                      filename: str | None = None) -> dict[str, Any]:
    """Validate ``source`` against the request and add it to the project as a new experiment.

    Returns:
        The new experiment's ``experiment.json`` content, plus ``detected`` candidates.

    Raises:
        CheckpointError / ArchitectureError / StateDictMismatchError / InvalidOptionError:
            the file cannot become an exportable experiment (nothing is written).
        NotFoundError: no such project and ``create_project`` is off.
    """
    check_id("project", request.project_id)
    project_dir = workspace.root / "projects" / request.project_id
    if not (project_dir / "project.json").is_file() and not request.create_project:
        raise NotFoundError(f"Project {request.project_id!r} does not exist; create it with the import "
                            "(create_project / --create-project).")
    project_task = workspace.project(request.project_id).task if (project_dir / "project.json").is_file() else None
    with _family_checkpoint(workspace.root, source, request, project_task) as (checkpoint, imported):
        return _import(workspace, request, project_dir, checkpoint, filename or source.name, imported)


@contextlib.contextmanager
def _family_checkpoint(root: Path, source: Path, request: ImportRequest, project_task: str | None):
    """``(checkpoint file, family files)``: the source itself, or a family's model, a program or a checkpoint with
    the user's model code read into a checkpoint of ours (a scratch ``.ckpt`` under ``.uploads``, removed
    afterwards)."""
    import torch

    from exporter.families import read_source
    from exporter.families.code import refuse_code
    from exporter.families.program import Programs, program_kind

    if request.model_code:
        if not request.allow_code:
            raise refuse_code()
        imported = _with_code(source, request)
    elif kind := program_kind(source):
        given = {**_given(request), "task": request.task or project_task}
        imported = Programs().read(source, kind, given)
    else:
        imported = read_source(source, request.architecture, request.options)
        if imported and (request.task or project_task) in imported.also:  # e.g. a Mask2Former as instances
            imported.hyper_parameters["task"] = request.task or project_task
    if imported is None:
        if request.options:
            raise InvalidOptionError(f"Import options ({', '.join(request.options)}) are for smp/<Arch> state "
                                     "dicts only.")
        yield source, None
        return
    path = _uploads(root) / f"family-{uuid.uuid4().hex}.ckpt"
    try:
        torch.save({"state_dict": imported.state_dict, "hyper_parameters": imported.hyper_parameters}, path)
        yield path, imported
    finally:
        path.unlink(missing_ok=True)


def _with_code(source: Path, request: ImportRequest) -> Any:
    """A checkpoint of the user's own model class: its weights, and the code beside them (``model_code``)."""
    from exporter.checkpoint import load_checkpoint
    from exporter.families import Imported
    from exporter.families.code import CODE_KEY, init_kwargs, load_class, read_code

    code = read_code(request.model_code or "", request.code_root)
    ckpt = load_checkpoint(source)
    cls = load_class(code)
    code["kwargs"] = _jsonable(init_kwargs(cls, request.model_kwargs, dict(ckpt.hyper_parameters)))
    hp = {k: v for k, v in ckpt.hyper_parameters.items() if k in (*MODEL_KEYS, "task")}
    hp.update({"architecture": f"code/{cls.__name__}", CODE_KEY: code})
    return Imported(ckpt.state_dict, hp, ckpt.sha256, sorted(code["files"]))


@contextlib.contextmanager
def sent_code(root: Path, filename: str, data: bytes):
    """Model code sent with an import over HTTP — one ``.py`` file or a ``.zip`` of a package — in a scratch
    folder under ``.uploads`` (the request's ``code_root``), removed afterwards.

    Raises:
        InvalidOptionError: neither, or a zip that does not unpack safely.
    """
    from exporter.archives import unpack
    from exporter.families.code import MAX_CODE_BYTES

    name = Path(filename or "").name
    if not name.endswith((".py", ".zip")):
        raise InvalidOptionError(f"Send the model code as one .py file or a .zip of its package, not {name!r}.")
    folder = _uploads(root) / f"code-{uuid.uuid4().hex}"
    folder.mkdir()
    try:
        (folder / name).write_bytes(data)
        if name.endswith(".zip"):
            unpack(folder / name, folder, limit=MAX_CODE_BYTES, error=InvalidOptionError)
            (folder / name).unlink()
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _import(workspace: Workspace, request: ImportRequest, project_dir: Path, source: Path, filename: str,
            imported: Any) -> dict[str, Any]:
    import torch

    from exporter.checkpoint import load_checkpoint
    from exporter.families import owner
    from exporter.families.code import CODE_KEY, refuse_code
    from exporter.pipeline import build_from

    exists = (project_dir / "project.json").is_file()
    ckpt = load_checkpoint(source)
    hp = dict(ckpt.hyper_parameters)
    if (CODE_KEY in hp or str(hp.get("architecture", "")).startswith("code/")) and not request.allow_code:
        raise refuse_code()  # a checkpoint that carries code runs it at every export
    project_task = workspace.project(request.project_id).task if exists else None
    task = request.task or hp.get("task") or project_task or DEFAULT_TASK
    if project_task and task != project_task:
        raise InvalidOptionError(f"Project {request.project_id!r} holds {project_task} models, not {task}.")
    detected, guessed = _detect(ckpt.state_dict, task, request, hp)
    model_meta = {**{k: v for k, v in hp.items() if k in MODEL_KEYS}, **guessed, "task": task,
                  **_given(request)}
    if not model_meta.get("architecture"):
        raise ArchitectureError(_choose_message(detected, task), stage="build")
    from exporter.models.classification import timm_normalization

    if "normalization" not in model_meta and (norm := timm_normalization(model_meta["architecture"])):
        model_meta["normalization"] = norm
    spec, module = build_from({k: v for k, v in hp.items() if k not in model_meta}, model_meta, ckpt.state_dict)
    try:
        with torch.no_grad():
            outputs = module(torch.rand(1, *spec.input_size))
    except Exception as exc:  # noqa: BLE001 - a model that cannot run is not imported
        raise InvalidOptionError(f"The model does not run at input size {list(spec.input_size)}: "
                                 f"{one_line(exc, 240)}", stage="build") from None
    family = owner(spec.architecture)
    if family and (problem := family.check_outputs(outputs, spec)):
        raise ArchitectureError(f"The model's outputs break the {spec.task} contract: {problem}.", stage="build")
    model_meta.update(spec.metadata())
    origin = {"family_files": imported.files, "family_sha256": imported.sha256} if imported else {}
    if code := hp.get(CODE_KEY):
        origin["model_code"] = {"entry": code["entry"], "sha256": code["sha256"], "files": sorted(code["files"])}
    return _write(workspace, request, project_dir, exists, source, filename, ckpt, model_meta, detected, origin)


MODEL_KEYS = ("architecture", "num_classes", "num_outputs", "input_size", "class_names", "normalization")


def _given(request: ImportRequest) -> dict[str, Any]:
    given: dict[str, Any] = {}
    if request.architecture:
        given["architecture"] = request.architecture
    if request.num_classes is not None:
        if request.num_classes <= 0:
            raise InvalidOptionError(f"num_classes must be positive, got {request.num_classes}.")
        given["num_classes"] = request.num_classes
    if request.input_size is not None:
        given["input_size"] = list(request.input_size)
    if request.class_names:
        given["class_names"] = list(request.class_names)
        given.setdefault("num_classes", len(request.class_names))
    if request.normalization:
        given["normalization"] = dict(request.normalization)
    return given


def _detect(state_dict: dict[str, Any], task: str, request: ImportRequest,
            hp: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Detected candidates, and what to take from the best one (architecture only when sure)."""
    if request.architecture or hp.get("architecture") or not _detectable(task):
        return [], {}
    from exporter.models.recognize import detect_architecture

    candidates = detect_architecture(state_dict)
    if not candidates or candidates[0].confidence < AUTO_PICK_CONFIDENCE:
        return [c.to_dict() for c in candidates], {}
    best = candidates[0]
    guessed: dict[str, Any] = {"architecture": best.architecture}
    if best.num_classes:
        guessed["num_classes"] = best.num_classes
    if best.input_size:
        guessed["input_size"] = list(best.input_size)
    return [c.to_dict() for c in candidates], guessed


def _detectable(task: str) -> bool:
    traits = task_traits(task)
    return bool(traits and traits.detectable)


def _choose_message(detected: list[dict[str, Any]], task: str) -> str:
    if detected:
        listed = ", ".join(f"{c['architecture']} ({c['confidence']:.0%})" for c in detected)
        return f"The weights match no architecture with certainty; closest: {listed}. Pass the architecture."
    if not _detectable(task):
        return f"Name the architecture: it cannot be detected for {task} checkpoints."
    return "No known architecture matches these weights; pass the architecture (torchvision name or timm/<name>)."


def _write(workspace: Workspace, request: ImportRequest, project_dir: Path, exists: bool, source: Path,
           filename: str | None, ckpt: Any, model_meta: dict[str, Any],
           detected: list[dict[str, Any]], origin: dict[str, Any]) -> dict[str, Any]:
    """Build the experiment aside, then rename it (and a new project) into place."""
    experiments = project_dir / "experiments"
    experiment_id = _unique_id(experiments, request.name or Path(filename or source.name).stem)
    staging = workspace.root / "projects" / f".importing-{uuid.uuid4().hex[:8]}"
    target_experiment = staging / "experiments" / experiment_id if not exists else staging / experiment_id
    try:
        (target_experiment / "checkpoints").mkdir(parents=True)
        shutil.copyfile(source, target_experiment / "checkpoints" / "best.ckpt")
        code = ckpt.hyper_parameters.get("model_code")
        code_copy = _write_code(staging / "code", code) if code else None  # the user's code, to read
        meta = write_experiment_json(
            target_experiment, experiment_id=experiment_id, name=request.name or experiment_id,
            project_id=request.project_id, task=model_meta["task"], model=model_meta, metrics={}, status="imported",
            source={"filename": filename or source.name, "sha256": ckpt.sha256, "epoch": ckpt.epoch,
                    "detected": detected, **origin},
            checkpoints={"best": {"path": "checkpoints/best.ckpt", "epoch": ckpt.epoch}})
        if exists:
            if code_copy and not (project_dir / "code" / code_copy.name).is_dir():
                (project_dir / "code").mkdir(exist_ok=True)
                os.replace(code_copy, project_dir / "code" / code_copy.name)
            experiments.mkdir(exist_ok=True)
            os.replace(target_experiment, experiments / experiment_id)
        else:
            write_project_json(staging, request.project_id, request.project_name or request.project_id,
                               model_meta["task"])
            os.replace(staging, project_dir)
    except FileExistsError:
        raise UsageError(f"Project {request.project_id!r} was created meanwhile; import again.") from None
    except OSError as exc:
        from exporter.errors import OutputFileError

        raise OutputFileError(f"Could not write the imported experiment: {exc}", stage="store") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {**meta, "detected": detected}


def _write_code(folder: Path, code: dict[str, Any]) -> Path:
    """The model code's files under ``folder/<sha256[:12]>/`` (the project's ``code/``)."""
    target = folder / code["sha256"][:12]
    for rel, text in code["files"].items():
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            raise InvalidOptionError(f"The model code holds an unsafe path: {rel!r}.")
        path = target.joinpath(*Path(rel).parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return target


def _unique_id(folder: Path, name: str) -> str:
    base = "exp-" + (re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-._").lower() or "imported")[:60]
    candidate, n = base, 2
    while (folder / candidate).exists():
        candidate, n = f"{base}-{n}", n + 1
    return check_id("experiment", candidate)


@contextlib.contextmanager
def receive_upload(root: Path):
    """A private file under ``<workspace>/.uploads`` to stream an upload into, removed afterwards
    (unless :func:`keep_upload` staged it).

    Yields ``(path, sink)``; ``sink(chunk)`` appends and enforces the checkpoint size limit.

    Raises:
        ResourceLimitError: the upload grows past ``$AISTUDIO_MAX_CHECKPOINT_MB``.
    """
    from exporter.checkpoint import max_checkpoint_bytes
    from exporter.errors import ResourceLimitError

    path = _uploads(root) / f"upload-{uuid.uuid4().hex}.ckpt"
    limit, written = max_checkpoint_bytes(), 0
    try:
        with path.open("wb") as handle:
            def sink(chunk: bytes) -> None:
                nonlocal written
                written += len(chunk)
                if written > limit:
                    raise ResourceLimitError(f"The upload is larger than the checkpoint limit "
                                             f"({limit // (1 << 20)} MB, $AISTUDIO_MAX_CHECKPOINT_MB).")
                handle.write(chunk)
                handle.flush()  # the importer reads the file by path

            yield path, sink
    finally:
        path.unlink(missing_ok=True)


def keep_upload(root: Path, path: Path, filename: str | None) -> dict[str, Any]:
    """Stage a received upload under an id (``.uploads/<id>/<filename>``), so it can be inspected and
    imported later, and retried with other fields without sending the file again. Staged files
    nobody imports go after a day.

    Returns:
        ``{"upload_id", "filename", "size_bytes", "created_at"}``.
    """
    prune_uploads(root)
    upload_id = uuid.uuid4().hex
    name = re.sub(r"[^A-Za-z0-9._ +-]+", "_", Path(filename or "").name).strip()[-120:]
    info = {"upload_id": upload_id, "filename": name if name.strip(".") else "checkpoint.ckpt",
            "size_bytes": path.stat().st_size, "created_at": utc_now()}
    folder = _uploads(root) / upload_id
    folder.mkdir()
    os.replace(path, folder / info["filename"])
    (_uploads(root) / f"{upload_id}.json").write_text(json.dumps(info))
    return info


def staged_upload(root: Path, upload_id: str) -> tuple[Path, dict[str, Any]]:
    """The staged file and its ``keep_upload`` description.

    Raises:
        NotFoundError: no such upload (imported already, pruned, or a malformed id).
    """
    folder = _uploads(root)
    if re.fullmatch(r"[0-9a-f]{32}", upload_id or ""):
        with contextlib.suppress(OSError, ValueError, KeyError):
            info = json.loads((folder / f"{upload_id}.json").read_text())
            if (path := folder / upload_id / info["filename"]).is_file():
                return path, info
    raise NotFoundError(f"Upload {upload_id!r} is not on the server (imported already, or older than a day); "
                        "upload the file again.")


def import_staged(workspace: Workspace, request: ImportRequest, upload_id: str) -> dict[str, Any]:
    """:func:`import_checkpoint` on a staged upload, which is removed once imported (kept on failure,
    so the import can be retried with other fields)."""
    path, info = staged_upload(workspace.root, upload_id)
    experiment = import_checkpoint(workspace, request, path, filename=info["filename"])
    discard_upload(workspace.root, upload_id)
    return experiment


def discard_upload(root: Path, upload_id: str) -> None:
    """Remove a staged upload (imported, or replaced by another file)."""
    path, _ = staged_upload(root, upload_id)
    shutil.rmtree(path.parent, ignore_errors=True)
    (_uploads(root) / f"{upload_id}.json").unlink(missing_ok=True)


def prune_uploads(root: Path, max_age_s: float = UPLOAD_TTL_S) -> None:
    """Delete staged uploads and stray partial files older than ``max_age_s``."""
    cutoff = time.time() - max_age_s
    for path in _uploads(root).iterdir():
        with contextlib.suppress(OSError):
            if path.stat().st_mtime < cutoff:
                shutil.rmtree(path) if path.is_dir() else path.unlink()


def _uploads(root: Path) -> Path:
    folder = root / ".uploads"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def parse_input_size(text: str | None) -> tuple[int, int, int] | None:
    """``"3,224,224"`` (or ``"224"``) → ``(3, 224, 224)``.

    Raises:
        InvalidOptionError: not 1 or 3 positive integers.
    """
    if text is None or not str(text).strip():
        return None
    try:
        dims = [int(v) for v in str(text).replace("x", ",").split(",")]
    except ValueError:
        dims = []
    if len(dims) == 1:
        dims = [3, dims[0], dims[0]]
    if len(dims) != 3 or min(dims) <= 0 or max(dims) > 4096:
        raise InvalidOptionError(f"input size {text!r} must be C,H,W with positive sizes up to 4096, e.g. 3,224,224.")
    return (dims[0], dims[1], dims[2])


def parse_class_names(text: str | None) -> tuple[str, ...] | None:
    """``"cat,dog"`` → ``("cat", "dog")`` (None when empty)."""
    names = tuple(n.strip() for n in str(text or "").split(",") if n.strip())
    return names or None


def parse_normalization(text: str | None) -> dict[str, list[float]] | None:
    """``imagenet``, ``none`` (the model normalises itself) or ``{"mean": [...], "std": [...]}``.

    Raises:
        InvalidOptionError: anything else.
    """
    from exporter.models.spec import IDENTITY_NORMALIZATION, IMAGENET_NORMALIZATION

    if text is None or not str(text).strip():
        return None
    named = {"imagenet": IMAGENET_NORMALIZATION, "none": IDENTITY_NORMALIZATION}
    if str(text).strip().lower() in named:
        return dict(named[str(text).strip().lower()])
    value = parse_json_object(text, "normalization") or {}
    try:
        norm = {"mean": [float(v) for v in value["mean"]], "std": [float(v) for v in value["std"]]}
    except (KeyError, TypeError, ValueError):
        norm = {}
    if not norm or len(norm["mean"]) != len(norm["std"]) or min(norm["std"], default=0) <= 0:
        raise InvalidOptionError('normalization must be imagenet, none or {"mean": [...], "std": [...]} with as many '
                                 "positive std values as means.")
    return norm


def parse_json_object(text: str | None, what: str) -> dict[str, Any] | None:
    """A JSON object given on the command line or in a form (None when empty).

    Raises:
        InvalidOptionError: not a JSON object.
    """
    if text is None or not str(text).strip():
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InvalidOptionError(f"{what} is not valid JSON: {one_line(exc)}") from None
    if not isinstance(value, dict):
        raise InvalidOptionError(f"{what} must be a JSON object, e.g. {{\"num_classes\": 3}}.")
    return value


def _jsonable(value: Any) -> Any:
    """Hyper-parameters can hold tuples, tensors or paths: keep what JSON can say."""
    return json.loads(json.dumps(value, default=str))
