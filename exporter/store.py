"""Export records on disk: ``exports/export-<id>/export.json`` plus ``exports_index.json``.

Every write is atomic (temp file in the same folder, fsync, ``os.replace``) and happens under
one file lock per project, so readers never see half a file and concurrent writers (worker
processes, the server, a CLI) never lose an update. The index is derived data: if it is
missing or unreadable it is read from the records, and the next write rewrites it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import threading
import uuid
from pathlib import Path
from typing import Any, Unpack

from filelock import FileLock

from exporter.errors import ExportError, NotFoundError, OutputFileError
from exporter.record import ExportRecord, RecordChanges
from exporter.workspace import Project, Workspace, utc_now

__all__ = ["ExportStore", "all_exports", "atomic_write_json", "find_export", "summarize", "utc_now"]

EXPORT_ID = re.compile(r"^export-[0-9a-f]{8}$")
RECORD_FILE = "export.json"
INDEX_FILE = "exports_index.json"
PARTIAL_DIR = ".partial"
WORKER_LOG = "worker.log"
LOCK_TIMEOUT_S = 60
_LOCKS: dict[str, FileLock] = {}
_LOCKS_GUARD = threading.Lock()


def atomic_write_json(path: Path, data: Any) -> None:
    """Write JSON to ``path`` so that readers see either the old or the new file, never a mix.

    Raises:
        OutputFileError: the folder is not writable or the disk is full.
    """
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, allow_nan=False, default=str)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except (OSError, ValueError) as exc:
        tmp.unlink(missing_ok=True)
        raise OutputFileError(f"Could not write {path.name}: {exc}", stage="store") from None


def summarize(record: ExportRecord) -> dict[str, Any]:
    """The index entry for a record (docs/contracts.md: Workspace on disk)."""
    validation, outcome = record.validation, record.decide()
    return {
        "id": record.id, "project_id": record.project_id, "experiment_id": record.experiment_id,
        "checkpoint": record.checkpoint, "format": record.format, "status": record.status,
        "created_at": record.created_at, "finished_at": record.finished_at,
        "output_size_mb": record.output_size_mb, "task": record.model.task,
        "architecture": record.model.architecture, "checkpoint_sha256": record.checkpoint_sha256,
        "checkpoint_path": record.checkpoint_path,
        "validation": {"passed": validation.passed if validation else None,
                       "verdict": validation.verdict if validation else None},
        "evaluation": _evaluation_summary(record),
        "benchmark": _benchmark_summary(record),
        "verdict": outcome.verdict, "gate": outcome.gate, "reason": outcome.reason,
    }


def _benchmark_summary(record: ExportRecord) -> dict[str, Any] | None:
    if not record.benchmarks:
        return None
    latest, done = record.benchmarks[-1], record.benchmark
    summary: dict[str, Any] = {"status": latest.status}
    if done is not None:
        summary.update({k: v for k, v in done.headline().items() if k in ("batch", "p50_ms", "speedup", "machine_id",
                                                                          "precision")})
    return summary


def _evaluation_summary(record: ExportRecord) -> dict[str, Any] | None:
    evaluation = record.evaluation
    if evaluation is None:
        return None
    primary = evaluation.primary_metric
    return {"status": evaluation.status, "verdict": evaluation.verdict, "primary_metric": primary,
            "delta": evaluation.delta.get(primary) if primary else None}


class ExportStore:
    """Records and index of one project's exports."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self.root = project.exports_dir
        self.index_path = self.root / INDEX_FILE

    @classmethod
    def for_project(cls, workspace: Workspace, project_id: str) -> ExportStore:
        """The store of ``project_id`` (raises ``NotFoundError`` if there is no such project)."""
        return cls(workspace.project(project_id))

    def lock(self) -> FileLock:
        """The project's write lock: one object per path, so it is re-entrant in a thread."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputFileError(f"The exports folder {self.root} cannot be created or written: "
                                  f"{exc.strerror or exc}.", stage="store") from None
        path = str(self.root / ".lock")
        with _LOCKS_GUARD:
            return _LOCKS.setdefault(path, FileLock(path, timeout=LOCK_TIMEOUT_S))

    def export_dir(self, export_id: str) -> Path:
        """Folder of an export; raises ``NotFoundError`` for a malformed id."""
        if not isinstance(export_id, str) or not EXPORT_ID.match(export_id):
            raise NotFoundError(f"Export id {export_id!r} is not valid (expected export-xxxxxxxx).")
        return self.root / export_id

    def clear_outputs(self, export_id: str) -> None:
        """Remove every file of an export except its record and log (after a failure/cancel)."""
        folder = self.export_dir(export_id)
        for child in folder.iterdir() if folder.is_dir() else ():
            if child.name in (RECORD_FILE, WORKER_LOG):
                continue
            shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)

    def create(self, **fields: Any) -> ExportRecord:
        """A new record with a fresh unique id and ``fields``, written and added to the index.

        Raises:
            pydantic.ValidationError: a field is unknown or has the wrong type (a bug, not user input).
        """
        with self.lock():
            while True:
                export_id = f"export-{uuid.uuid4().hex[:8]}"
                folder = self.root / export_id
                try:
                    folder.mkdir(parents=True)
                    break
                except FileExistsError:
                    continue
                except OSError as exc:
                    raise OutputFileError(f"Cannot create an export folder in {self.root}: {exc}",
                                          stage="store") from None
            try:
                record = self._write(ExportRecord(id=export_id, **fields))
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
        return record

    def get(self, export_id: str) -> ExportRecord:
        """The record of ``export_id`` (migrated if written by an older version); raises ``NotFoundError``."""
        path = self.export_dir(export_id) / RECORD_FILE
        try:
            return ExportRecord.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):  # pydantic's ValidationError is a ValueError
            raise NotFoundError(f"No export {export_id!r} in project {self.project.id!r}.") from None

    def update(self, export_id: str, **changes: Unpack[RecordChanges]) -> ExportRecord:
        """Set record fields and rewrite the record and its index entry atomically.

        Raises:
            TypeError: a field a job may not change, or one the record does not have (a misspelling must not add
                a field).
        """
        unknown = set(changes) - set(RecordChanges.__annotations__)
        if unknown:
            raise TypeError(f"ExportRecord has no field(s) {sorted(unknown)}")
        with self.lock():
            record = ExportRecord.model_validate({**self.get(export_id).model_dump(), **changes})
            self._seal(record, set(changes))  # before the record says it is complete: a reader finds it signed
            record = self._write(record)
        return record

    def _seal(self, record: ExportRecord, changed: set[str]) -> None:
        """(Re)write the passport and its signature when a completed export's evidence changed
        (``exporter.passport``); a failure to seal never loses the record: ``verify`` then says it is unsigned."""
        from exporter import passport

        if not passport.sealing_due(record, changed):
            return
        try:
            passport.seal(record, self.export_dir(record.id), self.project.path.parents[1])
        except (ExportError, OSError, ValueError) as exc:
            print(f"warning: export {record.id} was not signed: {exc}", file=sys.stderr)

    def delete(self, export_id: str) -> None:
        """Remove the export's folder and index entry."""
        folder = self.export_dir(export_id)
        with self.lock():
            if not folder.is_dir():
                raise NotFoundError(f"No export {export_id!r} in project {self.project.id!r}.")
            trash = self.root / f".deleted-{export_id}-{uuid.uuid4().hex[:6]}"
            os.replace(folder, trash)  # the folder vanishes at once; removal may take longer
            self._write_index([e for e in self._read_index() if e.get("id") != export_id])
        shutil.rmtree(trash, ignore_errors=True)

    def list(self) -> list[dict[str, Any]]:
        """Index entries, newest first."""
        entries = self._read_index()
        return sorted(entries, key=lambda e: str(e.get("created_at") or ""), reverse=True)

    def records(self) -> list[ExportRecord]:
        """Every readable record on disk (the source of truth behind the index)."""
        if not self.root.is_dir():
            return []
        found = []
        for folder in sorted(self.root.glob("export-*")):
            try:
                found.append(ExportRecord.from_json(json.loads((folder / RECORD_FILE).read_text(encoding="utf-8"))))
            except (OSError, ValueError):
                continue
        return found

    def _write(self, record: ExportRecord) -> ExportRecord:
        record = record.model_copy(update={"outcome": record.decide()})  # the one verdict, kept current
        atomic_write_json(self.export_dir(record.id) / RECORD_FILE, record.to_json())
        entries = [e for e in self._read_index() if e.get("id") != record.id]
        self._write_index([*entries, summarize(record)])
        return record

    def _read_index(self) -> list[dict[str, Any]]:
        try:
            entries = json.loads(self.index_path.read_text(encoding="utf-8"))
            if isinstance(entries, list) and all(isinstance(e, dict) for e in entries):
                return entries
        except FileNotFoundError:
            if not any(self.root.glob("export-*")):
                return []
        except (OSError, ValueError):
            pass
        return [summarize(r) for r in self.records() if EXPORT_ID.match(r.id)]

    def _write_index(self, entries: list[dict[str, Any]]) -> None:
        atomic_write_json(self.index_path, entries)


def find_export(workspace: Workspace, export_id: str) -> tuple[ExportStore, ExportRecord]:
    """Locate an export by id across all projects; raises ``NotFoundError``."""
    for project in workspace.projects():
        store = ExportStore(project)
        folder = store.export_dir(export_id)
        if (folder / RECORD_FILE).is_file():
            return store, store.get(export_id)
    raise NotFoundError(f"No export {export_id!r} in workspace {workspace.root}.")


def all_exports(workspace: Workspace, project_id: str | None = None) -> list[dict[str, Any]]:
    """Index entries of one project or of every project, newest first."""
    projects = [workspace.project(project_id)] if project_id else workspace.projects()
    entries = [e for p in projects for e in ExportStore(p).list()]
    return sorted(entries, key=lambda e: str(e.get("created_at") or ""), reverse=True)
