"""Run exports in child processes: start, cancel, and recover records whose worker died.

A worker is ``python -m exporter worker --project P --export-id ID`` in its own process
group, so the server stays responsive (and alive) whatever the export does. The record
holds the worker's pid and start time; a ``pending``/``running`` record whose worker is gone
is ``failed`` with ``error.type = "Interrupted"``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from exporter.errors import Cancelled, ExportError, Interrupted, UsageError
from exporter.record import ACTIVE, ExportRecord
from exporter.request import ExportRequest, prepare_export
from exporter.store import WORKER_LOG, ExportStore, find_export, utc_now
from exporter.workers import limit_memory, process_identity, worker_alive, worker_memory_bytes
from exporter.workspace import Workspace

__all__ = ["ACTIVE", "cancel_export", "delete_export", "recover_interrupted", "refresh", "start_evaluation",
           "start_export"]
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def start_export(workspace: Workspace, request: ExportRequest) -> ExportRecord:
    """Prepare an export and run it in a background worker process; returns the pending record."""
    record = prepare_export(workspace, request)
    store = ExportStore.for_project(workspace, record.project_id)
    pid = _spawn_worker(workspace, store, record.id)
    with store.lock():
        if store.get(record.id).active:
            record = store.update(record.id, worker=process_identity(pid))
    return record


def start_evaluation(workspace: Workspace, export_id: str, overrides: dict[str, Any] | None = None) -> ExportRecord:
    """Evaluate a completed export on its project's labelled set in a background worker.

    Returns the record with ``evaluation.status == "running"``; the worker replaces it with the result.

    Raises:
        UsageError / NotFoundError / DatasetError: the export cannot be evaluated (nothing is started).
    """
    from exporter.service import check_evaluable

    store, record = find_export(workspace, export_id)
    check_evaluable(store, record)
    if record.evaluation and record.evaluation.status == "running" and worker_alive(record.evaluation.worker):
        raise UsageError(f"Export {export_id} is being evaluated already.")
    requested = {k: v for k, v in (overrides or {}).items() if v is not None}
    store.update(export_id, evaluation={"status": "running", "requested": requested})
    pid = _spawn_worker(workspace, store, export_id, "--evaluate")
    with store.lock():
        current = store.get(export_id)
        if current.evaluation and current.evaluation.status == "running":
            current = store.update(export_id, evaluation={**current.evaluation.model_dump(),
                                                          "worker": process_identity(pid)})
    return current


def _spawn_worker(workspace: Workspace, store: ExportStore, export_id: str, *extra: str) -> int:
    """``python -m exporter worker`` for one export, in its own process group; returns its pid."""
    log = open(store.export_dir(export_id) / WORKER_LOG, "ab")  # noqa: SIM115 - owned by child
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "worker", "--workspace", str(workspace.root),
         "--project", store.project.id, "--export-id", export_id, *extra],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env,
        preexec_fn=limit_memory(worker_memory_bytes()))
    log.close()
    # Reap the child when it ends so it never lingers as a zombie that looks alive.
    threading.Thread(target=proc.wait, daemon=True).start()
    return proc.pid


def cancel_export(workspace: Workspace, export_id: str) -> ExportRecord:
    """Stop a pending/running export's worker and end its record ``cancelled``."""
    store, record = find_export(workspace, export_id)
    if not record.active:
        return record
    worker = record.worker
    if worker_alive(worker) and worker.pid != os.getpid():
        try:
            os.killpg(worker.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return _end(store, record, "cancelled", Cancelled("Cancelled by the user.", stage=record.stage))


def delete_export(workspace: Workspace, export_id: str) -> None:
    """Remove an export's folder and index entry, cancelling it first if it is still running.

    Raises:
        NotFoundError: no such export.
    """
    cancel_export(workspace, export_id)
    store, _ = find_export(workspace, export_id)
    store.delete(export_id)


def refresh(workspace: Workspace, export_id: str) -> ExportRecord:
    """The record of ``export_id``, marked Interrupted first if its worker has died."""
    store, record = find_export(workspace, export_id)
    if record.active and not worker_alive(record.worker):
        record = _interrupt(store, record)
    evaluation = record.evaluation
    if evaluation and evaluation.status == "running" and not worker_alive(evaluation.worker):
        with store.lock():
            current = store.get(export_id).evaluation
            if current and current.status == "running" and not worker_alive(current.worker):
                error = Interrupted("The evaluation's worker ended before it finished; evaluate again.",
                                    stage="evaluate")
                record = store.update(export_id, evaluation={"status": "failed", "error": error.to_dict()})
    return record


def recover_interrupted(workspace: Workspace) -> list[str]:
    """Mark every active record whose worker is gone ``failed``/``Interrupted``; returns their ids."""
    recovered = []
    for project in workspace.projects():
        store = ExportStore(project)
        for entry in store.list():
            if entry.get("status") not in ACTIVE:
                continue
            try:
                record = store.get(entry["id"])
            except ExportError:  # an unreadable record is skipped
                continue
            if record.active and not worker_alive(record.worker):
                _interrupt(store, record)
                recovered.append(record.id)
    return recovered


def _interrupt(store: ExportStore, record: ExportRecord) -> ExportRecord:
    error = Interrupted("The export's worker process ended before it finished "
                        "(server stopped, killed or out of memory); run it again.", stage=record.stage)
    return _end(store, record, "failed", error)


def _end(store: ExportStore, record: ExportRecord, status: str, error: ExportError) -> ExportRecord:
    with store.lock():
        current = store.get(record.id)
        if not current.active:  # it finished meanwhile: keep the real outcome
            return current
        store.clear_outputs(record.id)
        return store.update(record.id, status=status, finished_at=utc_now(), error=error.to_dict(),
                            progress={"stage": current.stage, "fraction": 1.0}, files=[], output_file=None)
