"""Bring your own labelled set: a folder or a ``.zip`` becomes ``projects/<id>/data/val/``.

Everything is checked before the project changes: zip entries (no ``..``, absolute paths or
symlinks; size and compression-ratio caps against zip bombs), file kinds (images and the layout's
label files only), every image readable, then the task's own reader (``Task.read_val_set``) against
every experiment of the project (classes, masks, annotations). The set is unpacked aside, inside
the project folder, and renamed into place only when all of that passed; a refusal leaves the
workspace as it was.
"""

from __future__ import annotations

import os
import shutil
import uuid
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from exporter.archives import unpack
from exporter.datasets import IMAGE_SUFFIXES, digest, image_size
from exporter.errors import DatasetError
from exporter.evaluation import VAL_DIR
from exporter.workspace import Project, Workspace

MAX_DATASET_ENV = "AISTUDIO_MAX_DATASET_MB"
DEFAULT_MAX_DATASET_MB = 4 * 1024
LABEL_SUFFIXES = (".json", ".csv", ".txt")  # annotations.json, targets.csv, labelTxt/*.txt
SKIPPED = ("__MACOSX", ".DS_Store", "Thumbs.db")  # what archivers add; never part of a set
LAYOUT_FOLDERS = ("images", "masks", "labelTxt", "good", "ground_truth")


def max_dataset_bytes() -> int:
    """Largest set (unpacked) accepted: ``$AISTUDIO_MAX_DATASET_MB`` (default 4 GiB)."""
    try:
        return int(float(os.environ.get(MAX_DATASET_ENV, DEFAULT_MAX_DATASET_MB)) * 1024 * 1024)
    except ValueError:
        return DEFAULT_MAX_DATASET_MB * 1024 * 1024


def attach_dataset(workspace: Workspace, project_id: str, source: Path) -> dict[str, Any]:
    """Check ``source`` (a folder or a .zip) in the project's task layout and make it ``data/val``.

    Returns:
        ``{"project_id", "path", "layout", "images", "digest", "replaced"}``.

    Raises:
        NotFoundError: no such project.
        DatasetError: the source is unsafe, broken or not in the task's layout (one line saying what to fix).
    """
    project = workspace.project(project_id)
    source = Path(source)
    if not source.exists():
        raise DatasetError(f"{source} does not exist; give a folder or a .zip of the labelled set.")
    staging = project.path / f".incoming-val-{uuid.uuid4().hex[:12]}"
    try:
        staging.mkdir()
        if source.is_dir():
            _copy_folder(source, staging)
        elif zipfile.is_zipfile(source):
            unpack(source, staging, limit=max_dataset_bytes(), error=DatasetError,
                   hint=f"raise {MAX_DATASET_ENV} to allow it", skip=_skipped, check=_check_kind)
        else:
            raise DatasetError(f"{source.name} is neither a folder nor a .zip archive.")
        root = _layout_root(staging, project)
        layout, count = _check(root, project)
        final = project.path / VAL_DIR
        replaced = final.exists()
        final.parent.mkdir(parents=True, exist_ok=True)
        old = project.path / f".replaced-val-{uuid.uuid4().hex[:12]}"
        if replaced:
            os.replace(final, old)
        os.replace(root, final)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"project_id": project.id, "path": str(VAL_DIR), "layout": layout, "images": count,
            "digest": digest(final), "replaced": replaced}


def val_set_summary(project: Project) -> dict[str, Any] | None:
    """A cheap look at the project's labelled set (no reading): image count, or ``None`` when absent."""
    folder = project.path / VAL_DIR
    if not folder.is_dir():
        return None
    images = sum(1 for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and "ground_truth" not in p.parts)
    return {"path": str(VAL_DIR), "images": images}


def _skipped(parts: tuple[str, ...]) -> bool:
    return any(part in SKIPPED or part.startswith("._") for part in parts)


def _copy_folder(source: Path, target: Path) -> None:
    for folder, dirs, files in os.walk(source):
        here = Path(folder)
        for name in sorted(dirs + files):
            path = here / name
            relative = path.relative_to(source)
            if path.is_symlink():
                raise DatasetError(f"{relative} is a symbolic link; copy the files themselves into the set.")
            if _skipped(relative.parts) or path.is_dir():
                continue
            _check_kind(PurePosixPath(relative.as_posix()))
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target / relative)
        dirs[:] = [d for d in dirs if not _skipped((d,))]


def _check_kind(name: PurePosixPath) -> None:
    if name.suffix.lower() not in IMAGE_SUFFIXES + LABEL_SUFFIXES:
        raise DatasetError(f"{name} is neither an image ({', '.join(IMAGE_SUFFIXES)}) nor a label file "
                           f"({', '.join(LABEL_SUFFIXES)}); remove it from the set.")


def _layout_root(staging: Path, project: Project) -> Path:
    """The folder that holds the layout: a zip of ``myset/…`` has it one level down."""
    entries = list(staging.iterdir())
    if not entries:
        raise DatasetError("The set is empty; expected images and labels in the task's layout "
                           "(docs/evaluation.md).")
    names = set(LAYOUT_FOLDERS) | {str(c) for c in project.meta.get("class_names") or ()}
    if len(entries) == 1 and entries[0].is_dir() and entries[0].name not in names:
        return entries[0]
    return staging


def _check(root: Path, project: Project) -> tuple[str, int]:
    """Every image readable, then the task's reader for each experiment's classes and outputs."""
    from exporter.models.spec import ModelSpec
    from exporter.tasks import get_task

    images = [p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES]
    if not images:
        raise DatasetError("The set holds no images (png, jpg, bmp); expected the task's layout "
                           "(docs/evaluation.md).")
    for path in images:
        image_size(path)
    task = get_task(project.task or "")
    specs = {e.id: ModelSpec.resolve({}, {"architecture": "-", **e.model}, project.task)
             for e in project.experiments()}
    if not specs:  # no experiment yet: the project's own class names
        specs = {project.id: ModelSpec.resolve({}, {"architecture": "-", **project.meta}, project.task)}
    layout, count = "", 0
    for owner, spec in specs.items():
        try:
            valset = task.read_val_set(root, spec)
        except DatasetError as exc:
            raise DatasetError(f"{exc.message} (checked for {owner})") from None
        layout, count = valset.layout, len(valset.images)
    return layout, count


def attach_staged(workspace: Workspace, project_id: str, upload_id: str) -> dict[str, Any]:
    """:func:`attach_dataset` on a staged upload (``POST /api/uploads``), removed once attached (kept on a
    refusal, so the same file can be attached to another project)."""
    from exporter.importer import discard_upload, staged_upload

    path, _ = staged_upload(workspace.root, upload_id)
    info = attach_dataset(workspace, project_id, path)
    discard_upload(workspace.root, upload_id)
    return info
