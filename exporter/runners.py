"""Where jobs run: one seam, two runners, chosen by ``$AISTUDIO_RUNNER`` (``workers.runner_name``: ``local``
unless set to ``ray``).

A job is one export (with the benchmarks queued behind it), or one evaluation, diagnosis or benchmark of a
completed export — what ``python -m exporter worker`` runs, named by its ``flags`` (``()``,
``("--evaluate",)``, ``("--diagnose",)``, ``("--benchmark", ENTRY)``). A runner can

- ``start`` a job in the background, recording its ``worker`` (the process; for Ray, the node);
- ``run`` a job and wait for it here (the CLI's ``export``);
- ``cancel`` it, given its recorded ``worker``.

``local`` runs a job as a child process of this machine (its slots are file locks under the workspace);
``ray`` (``exporter.ray_runner``, the only module that imports Ray) sends it to a Ray cluster and
publishes what comes back into the workspace exactly as a local worker would have written it. The
dashboard, CLI and API call ``exporter.jobs``, which asks ``get_runner()``; none of them knows which one it is.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from exporter.record import Worker
from exporter.workers import limit_memory, process_identity, worker_alive, worker_memory_bytes

PARTS = {"--evaluate": "evaluation", "--diagnose": "diagnosis"}  # side jobs and the record part they fill
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class LocalRunner:
    """Jobs as ``python -m exporter worker`` child processes, each in its own process group."""

    name = "local"

    def start(self, workspace: Any, store: Any, export_id: str, flags: tuple[str, ...] = ()) -> None:
        """Spawn the worker and record its ``{"pid", "create_time"}``."""
        from exporter.store import WORKER_LOG

        log = open(store.export_dir(export_id) / WORKER_LOG, "ab")  # noqa: SIM115 - owned by child
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT),
                                                                         os.environ.get("PYTHONPATH")]))}
        proc = subprocess.Popen(
            [sys.executable, "-m", "exporter", "worker", "--workspace", str(workspace.root),
             "--project", store.project.id, "--export-id", export_id, *flags],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env,
            preexec_fn=limit_memory(worker_memory_bytes()))
        log.close()
        # Reap the child when it ends so it never lingers as a zombie that looks alive.
        threading.Thread(target=proc.wait, daemon=True).start()
        record_worker(store, export_id, flags, process_identity(proc.pid))

    def run(self, workspace: Any, store: Any, export_id: str, flags: tuple[str, ...] = ()) -> Any:
        """Run the job in this process; returns the final record."""
        return run_job(workspace, store.project.id, export_id, flags)

    def cancel(self, worker: Worker | None) -> None:
        """Kill the job's process group (the worker and anything it started)."""
        if worker_alive(worker) and worker.pid != os.getpid():
            try:
                os.killpg(worker.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


LOCAL = LocalRunner()


def run_job(workspace: Any, project_id: str, export_id: str, flags: tuple[str, ...]) -> Any:
    """A worker's job, in this process (what ``python -m exporter worker`` and a Ray task both run); returns
    the record. Evaluation and diagnosis store a failure in their part (the error is not raised here)."""
    from exporter.benchmark import drop_entries, run_benchmark
    from exporter.errors import ExportError
    from exporter.pipeline import run_export
    from exporter.store import ExportStore, find_export

    try:
        if "--diagnose" in flags:
            from exporter.service import diagnose_export

            return diagnose_export(workspace, export_id)
        if "--evaluate" in flags:
            from exporter.service import evaluate_export

            _, record = find_export(workspace, export_id)
            return evaluate_export(workspace, export_id, getattr(record.evaluation, "requested", None) or {})
    except ExportError:
        return find_export(workspace, export_id)[1]
    if entry := benchmark_entry(flags):
        return run_benchmark(workspace, export_id, entry)
    record = run_export(workspace, project_id, export_id)
    queued = [b.id for b in record.benchmarks if b.status == "queued"]
    if record.status != "completed":
        return drop_entries(ExportStore.for_project(workspace, project_id), export_id)
    for entry_id in queued:
        record = run_benchmark(workspace, export_id, entry_id)
    return record


def benchmark_entry(flags: tuple[str, ...]) -> str | None:
    """The benchmark entry a ``--benchmark ENTRY`` job fills; None for other jobs."""
    return flags[flags.index("--benchmark") + 1] if "--benchmark" in flags else None


def still_running(record: Any, flags: tuple[str, ...]) -> bool:
    """Whether the record still expects the job: its benchmark entry is there, its evaluation or diagnosis is
    ``running``, or (an export) the record is active — not cancelled, deleted or ended meanwhile."""
    if entry := benchmark_entry(flags):
        return any(b.id == entry for b in record.benchmarks)
    if flags:
        part = getattr(record, PARTS[flags[0]])
        return part is not None and part.status == "running"
    return record.active


def record_worker(store: Any, export_id: str, flags: tuple[str, ...], worker: dict[str, Any]) -> None:
    """Write ``worker`` where the job's record keeps it — the export's, its evaluation's or diagnosis's, or its
    benchmark entry's — unless that job has ended meanwhile (a fast job may finish before it is recorded)."""
    from exporter.benchmark import update_entry

    with store.lock():
        record = store.get(export_id)
        if not still_running(record, flags):
            return
        if entry := benchmark_entry(flags):
            update_entry(store, export_id, entry, worker=worker)
        elif flags:
            store.update(export_id, **{PARTS[flags[0]]: {**getattr(record, PARTS[flags[0]]).model_dump(),
                                                         "worker": worker}})
        else:
            store.update(export_id, worker=worker)


def end_active(store: Any, record: Any, status: str, error: Any) -> Any:
    """End an active record ``status`` (failed, cancelled) with ``error``, its files removed; a record that
    finished meanwhile keeps its real outcome."""
    from exporter.store import utc_now

    with store.lock():
        current = store.get(record.id)
        if not current.active:
            return current
        store.clear_outputs(record.id)
        return store.update(record.id, status=status, finished_at=utc_now(), error=error.to_dict(),
                            progress={"stage": current.stage, "fraction": 1.0}, files=[], output_file=None,
                            benchmarks=[b.model_dump(mode="json") for b in current.benchmarks if b.status != "queued"])
