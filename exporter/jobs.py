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

from exporter.errors import Cancelled, Interrupted
from exporter.service import ExportRequest, prepare_export
from exporter.store import WORKER_LOG, ExportStore, find_export, utc_now
from exporter.workspace import Workspace

ACTIVE = ("pending", "running")
MEMORY_ENV = "AISTUDIO_WORKER_MEMORY_MB"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def process_identity(pid: int) -> dict[str, Any]:
    """``{"pid", "create_time"}`` of a live process (create_time guards against pid reuse)."""
    import psutil

    try:
        return {"pid": pid, "create_time": psutil.Process(pid).create_time()}
    except psutil.Error:
        return {"pid": pid, "create_time": None}


def worker_alive(worker: dict[str, Any] | None) -> bool:
    """True when the process recorded in ``worker`` still runs (and is the same process)."""
    import psutil

    if not worker or not isinstance(worker.get("pid"), int):
        return False
    try:
        proc = psutil.Process(worker["pid"])
        same = worker.get("create_time") in (None, proc.create_time())
        return same and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def start_export(workspace: Workspace, request: ExportRequest) -> dict[str, Any]:
    """Prepare an export and run it in a background worker process; returns the pending record."""
    record = prepare_export(workspace, request)
    store = ExportStore.for_project(workspace, record["project_id"])
    log = open(store.export_dir(record["id"]) / WORKER_LOG, "wb")  # noqa: SIM115 - owned by child
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "worker", "--workspace", str(workspace.root),
         "--project", record["project_id"], "--export-id", record["id"]],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env,
        preexec_fn=_limit_memory(worker_memory_bytes()))
    log.close()
    # Reap the child when it ends so it never lingers as a zombie that looks alive.
    threading.Thread(target=proc.wait, daemon=True).start()
    with store.lock():
        current = store.get(record["id"])
        if current["status"] in ACTIVE:
            record = store.update(record["id"], worker=process_identity(proc.pid))
    return record


def worker_memory_bytes() -> int:
    """Memory a worker may allocate: ``$AISTUDIO_WORKER_MEMORY_MB``, default 80 % of the machine."""
    import psutil

    try:
        return int(float(os.environ[MEMORY_ENV]) * 2**20)
    except (KeyError, ValueError):
        return int(psutil.virtual_memory().total * 0.8)


def _limit_memory(limit: int):
    def apply() -> None:  # runs in the child before exec: only the worker is limited
        import resource

        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))

    return apply


def cancel_export(workspace: Workspace, export_id: str) -> dict[str, Any]:
    """Stop a pending/running export's worker and end its record ``cancelled``."""
    store, record = find_export(workspace, export_id)
    if record["status"] not in ACTIVE:
        return record
    worker = record.get("worker")
    if worker_alive(worker) and worker["pid"] != os.getpid():
        try:
            os.killpg(worker["pid"], signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return _end(store, record, "cancelled", Cancelled("Cancelled by the user.", stage=_stage(record)))


def refresh(workspace: Workspace, export_id: str) -> dict[str, Any]:
    """The record of ``export_id``, marked Interrupted first if its worker has died."""
    store, record = find_export(workspace, export_id)
    if record["status"] in ACTIVE and not worker_alive(record.get("worker")):
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
            except Exception:  # noqa: BLE001 - an unreadable record is skipped
                continue
            if record["status"] in ACTIVE and not worker_alive(record.get("worker")):
                _interrupt(store, record)
                recovered.append(record["id"])
    return recovered


def _interrupt(store: ExportStore, record: dict[str, Any]) -> dict[str, Any]:
    error = Interrupted("The export's worker process ended before it finished "
                        "(server stopped, killed or out of memory); run it again.", stage=_stage(record))
    return _end(store, record, "failed", error)


def _stage(record: dict[str, Any]) -> str | None:
    return (record.get("progress") or {}).get("stage")


def _end(store: ExportStore, record: dict[str, Any], status: str, error: Exception) -> dict[str, Any]:
    with store.lock():
        current = store.get(record["id"])
        if current["status"] not in ACTIVE:  # it finished meanwhile: keep the real outcome
            return current
        store.clear_outputs(record["id"])
        return store.update(record["id"], status=status, finished_at=utc_now(), error=error.to_dict(),  # type: ignore[attr-defined]
                            progress={"stage": _stage(current), "fraction": 1.0}, files=[],
                            output_file=None)
