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

__all__ = ["ACTIVE", "cancel_benchmark", "cancel_export", "delete_export", "recover_interrupted", "refresh",
           "run_worker", "start_benchmark", "start_diagnosis", "start_evaluation", "start_export", "start_export_all"]
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

    requested = {k: v for k, v in (overrides or {}).items() if v is not None}
    return _start_side_job(workspace, export_id, "evaluation", check_evaluable, {"requested": requested})


def start_diagnosis(workspace: Workspace, export_id: str) -> ExportRecord:
    """Diagnose a completed export layer by layer in a background worker.

    Returns the record with ``diagnosis.status == "running"``; the worker replaces it with the result.

    Raises:
        UsageError / NotFoundError: the export cannot be diagnosed (nothing is started).
    """
    from exporter.report import require_current

    return _start_side_job(workspace, export_id, "diagnosis",
                           lambda store, record: require_current(store, record, "diagnose"), {})


# Jobs that add a part to a completed export: the part → (worker flag, "being …", the action's verb).
SIDE_JOBS = {"evaluation": ("--evaluate", "evaluated", "evaluate"),
             "diagnosis": ("--diagnose", "diagnosed", "diagnose")}


def _start_side_job(workspace: Workspace, export_id: str, field: str, check: Any,
                    state: dict[str, Any]) -> ExportRecord:
    """Start a job that adds ``field`` (evaluation, diagnosis) to a completed export, in a worker."""
    flag, done, _ = SIDE_JOBS[field]
    store, record = find_export(workspace, export_id)
    check(store, record)
    current = getattr(record, field)
    if current and current.status == "running" and worker_alive(current.worker):
        raise UsageError(f"Export {export_id} is being {done} already.")
    store.update(export_id, **{field: {"status": "running", **state}})
    pid = _spawn_worker(workspace, store, export_id, flag)
    with store.lock():
        current = store.get(export_id)
        part = getattr(current, field)
        if part and part.status == "running":
            current = store.update(export_id, **{field: {**part.model_dump(), "worker": process_identity(pid)}})
    return current


def start_benchmark(workspace: Workspace, export_id: str, requested: dict[str, Any] | None = None) -> ExportRecord:
    """Benchmark a completed export (the file and PyTorch eager) in a background worker.

    Returns the record with a ``running`` entry last in ``benchmarks``; the worker fills it in.

    Raises:
        UsageError / NotFoundError: bad settings, or an export that cannot be benchmarked (nothing starts).
    """
    from exporter.benchmark import add_entry, update_entry

    store, entry_id = add_entry(workspace, export_id, requested)
    pid = _spawn_worker(workspace, store, export_id, "--benchmark", entry_id)
    return update_entry(store, export_id, entry_id, worker=process_identity(pid))


def start_export_all(workspace: Workspace, project_id: str, experiment_id: str, checkpoint: str = "best",
                     benchmark: dict[str, Any] | None = None) -> dict[str, Any]:
    """Start one export per format × precision this experiment's task can take, here and now: each its
    own record and job, validated, evaluated when the project has a labelled set, then benchmarked with
    ``benchmark``'s settings (None: not benchmarked).

    Returns:
        ``{"started": [records], "skipped": [{"format", "variant", "reason"}]}``.

    Raises:
        NotFoundError / UsageError: unknown ids or bad benchmark settings (nothing is started).
    """
    from exporter.benchmark import parse_request
    from exporter.formats import get_available_formats, get_format

    project = workspace.project(project_id)
    experiment = project.experiment(experiment_id)
    experiment.checkpoint(checkpoint)
    settings = None if benchmark is None else parse_request(benchmark)
    task = experiment.task or project.task
    started, skipped = [], []
    for row in get_available_formats(task):
        fmt = get_format(row["name"], require_available=False)
        for label, options in fmt.variants:
            if not row["available"]:
                skipped.append({"format": fmt.name, "variant": label, "reason": row["reason"]})
                continue
            try:
                started.append(start_export(workspace, ExportRequest(project.id, experiment.id, checkpoint, fmt.name,
                                                                     dict(options), benchmark=settings)))
            except UsageError as exc:  # e.g. fp16 refused for this task: say why, go on
                skipped.append({"format": fmt.name, "variant": label, "reason": exc.message})
    return {"started": started, "skipped": skipped}


def cancel_benchmark(workspace: Workspace, export_id: str) -> ExportRecord:
    """Stop an export's queued or running benchmark and remove its entry (no half figures are kept)."""
    from exporter.benchmark import drop_entries

    store, record = find_export(workspace, export_id)
    for entry in record.benchmarks:
        if entry.status == "running" and worker_alive(entry.worker) and entry.worker.pid != os.getpid():
            try:
                os.killpg(entry.worker.pid, signal.SIGKILL)  # the worker and its measuring children
            except (ProcessLookupError, PermissionError):
                pass
    return drop_entries(store, export_id, ("queued", "running"))


def run_worker(workspace: Workspace, project_id: str, export_id: str, benchmark: str | None = None) -> ExportRecord:
    """A worker's job: run the export (then the benchmarks queued behind it), or one benchmark."""
    from exporter.benchmark import drop_entries, run_benchmark
    from exporter.pipeline import run_export

    if benchmark:
        return run_benchmark(workspace, export_id, benchmark)
    record = run_export(workspace, project_id, export_id)
    queued = [b.id for b in record.benchmarks if b.status == "queued"]
    if record.status != "completed":
        return drop_entries(ExportStore.for_project(workspace, project_id), export_id)
    for entry_id in queued:
        record = run_benchmark(workspace, export_id, entry_id)
    return record


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
    for field, (_, _, action) in SIDE_JOBS.items():
        part = getattr(record, field)
        if part and part.status == "running" and not worker_alive(part.worker):
            with store.lock():
                current = getattr(store.get(export_id), field)
                if current and current.status == "running" and not worker_alive(current.worker):
                    error = Interrupted(f"The {field}'s worker ended before it finished; {action} again.",
                                        stage=action)
                    record = store.update(export_id, **{field: {"status": "failed", "error": error.to_dict()}})
    if not record.active and any(b.status in ("queued", "running") for b in record.benchmarks):
        record = _interrupt_benchmarks(store, record)
    return record


def _interrupt_benchmarks(store: ExportStore, record: ExportRecord) -> ExportRecord:
    """End ``failed``/``Interrupted`` the benchmarks of an ended export whose worker is gone."""
    from exporter.benchmark import update_entry

    error = Interrupted("The benchmark's worker ended before it finished; benchmark again.", stage="benchmark")
    for entry in record.benchmarks:
        if entry.status in ("queued", "running") and not worker_alive(entry.worker or record.worker):
            record = update_entry(store, record.id, entry.id, status="failed", error=error.to_dict(),
                                  finished_at=utc_now())
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
                            progress={"stage": current.stage, "fraction": 1.0}, files=[], output_file=None,
                            benchmarks=[b.model_dump(mode="json") for b in current.benchmarks if b.status != "queued"])
