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

from exporter.errors import Cancelled, ExportError, Interrupted
from exporter.record import ACTIVE, ExportRecord
from exporter.request import ExportRequest, prepare_export
from exporter.store import WORKER_LOG, ExportStore, find_export, utc_now
from exporter.workers import limit_memory, process_identity, worker_alive, worker_memory_bytes
from exporter.workspace import Workspace

__all__ = ["ACTIVE", "cancel_export", "delete_export", "recover_interrupted", "refresh", "start_export"]
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def start_export(workspace: Workspace, request: ExportRequest) -> ExportRecord:
    """Prepare an export and run it in a background worker process; returns the pending record."""
    record = prepare_export(workspace, request)
    store = ExportStore.for_project(workspace, record.project_id)
    log = open(store.export_dir(record.id) / WORKER_LOG, "wb")  # noqa: SIM115 - owned by child
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "worker", "--workspace", str(workspace.root),
         "--project", record.project_id, "--export-id", record.id],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env,
        preexec_fn=limit_memory(worker_memory_bytes()))
    log.close()
    # Reap the child when it ends so it never lingers as a zombie that looks alive.
    threading.Thread(target=proc.wait, daemon=True).start()
    with store.lock():
        if store.get(record.id).active:
            record = store.update(record.id, worker=process_identity(proc.pid))
    return record


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
