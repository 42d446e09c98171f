"""Run exports and the jobs on them in the background: start, cancel, and recover records whose worker died.

Where a job runs is the runner's business (``get_runner``: ``exporter.jobs.local`` — child processes of this
machine — by default, ``exporter.jobs.cluster`` — a Ray cluster — with ``AISTUDIO_RUNNER=ray``). The record
holds the worker's identity — the process, and for Ray the node — and a ``pending``/``running`` record whose
worker is gone is ``failed`` with ``error.type = "Interrupted"``.
"""

from __future__ import annotations

from typing import Any, Protocol

from exporter.errors import Cancelled, ExportError, Interrupted, UsageError
from exporter.jobs.kinds import SIDE_JOBS, Benchmark, Diagnose, Evaluate, Export, Job, end_active
from exporter.jobs.local import LOCAL
from exporter.jobs.slots import runner_name, worker_alive
from exporter.record import ACTIVE, ExportRecord, Worker
from exporter.request import ExportRequest, prepare_export
from exporter.store import ExportStore, find_export, utc_now
from exporter.workspace import Workspace

__all__ = ["ACTIVE", "Runner", "cancel_benchmark", "cancel_export", "delete_export", "export_and_wait", "get_runner",
           "recover_interrupted", "refresh", "start_benchmark", "start_diagnosis", "start_evaluation", "start_export",
           "start_export_all"]


class Runner(Protocol):
    """Where jobs run. A runner can ``start`` a job in the background (recording its worker: the process; for Ray,
    the node), ``run`` one and wait for it here (the CLI's ``export``), ``cancel`` one given its recorded worker,
    and say whether that worker is ``alive``."""

    name: str

    def start(self, workspace: Workspace, store: ExportStore, job: Job) -> None: ...

    def run(self, workspace: Workspace, store: ExportStore, job: Job) -> ExportRecord: ...

    def cancel(self, worker: Worker | None) -> None: ...

    def alive(self, worker: Worker | None) -> bool: ...


def get_runner() -> Runner:
    """The runner jobs go to: ``exporter.jobs.local.LOCAL``, or the Ray runner (connected on its first job)."""
    if runner_name() == "ray":
        from exporter.jobs.cluster import RayRunner

        return RayRunner.shared()
    return LOCAL


def start_export(workspace: Workspace, request: ExportRequest) -> ExportRecord:
    """Prepare an export and run it in the background; returns the pending record.

    Raises:
        UsageError / NotFoundError: the request is invalid, or no Ray node can ever run it (nothing is written).
    """
    runner = get_runner()
    record = prepare_export(workspace, request, check=getattr(runner, "check", None))
    store = ExportStore.for_project(workspace, record.project_id)
    runner.start(workspace, store, Export(record.project_id, record.id))
    return store.get(record.id)


def export_and_wait(workspace: Workspace, request: ExportRequest) -> ExportRecord:
    """Prepare an export and run it to the end where the runner runs jobs, waiting here; the final record."""
    runner = get_runner()
    record = prepare_export(workspace, request, check=getattr(runner, "check", None))
    return runner.run(workspace, ExportStore.for_project(workspace, record.project_id),
                      Export(record.project_id, record.id))


def start_evaluation(workspace: Workspace, export_id: str, overrides: dict[str, Any] | None = None) -> ExportRecord:
    """Evaluate a completed export on its project's labelled set in a background worker.

    Returns the record with ``evaluation.status == "running"``; the worker replaces it with the result.

    Raises:
        UsageError / NotFoundError / DatasetError: the export cannot be evaluated (nothing is started).
    """
    from exporter.service import check_evaluable

    requested = {k: v for k, v in (overrides or {}).items() if v is not None}
    return _start_side_job(workspace, export_id, Evaluate, check_evaluable, {"requested": requested})


def start_diagnosis(workspace: Workspace, export_id: str) -> ExportRecord:
    """Diagnose a completed export layer by layer in a background worker.

    Returns the record with ``diagnosis.status == "running"``; the worker replaces it with the result.

    Raises:
        UsageError / NotFoundError: the export cannot be diagnosed (nothing is started).
    """
    from exporter.report import require_current

    return _start_side_job(workspace, export_id, Diagnose,
                           lambda store, record: require_current(store, record, "diagnose"), {})


def _start_side_job(workspace: Workspace, export_id: str, kind: type[Job], check: Any,
                    state: dict[str, Any]) -> ExportRecord:
    """Start a job that adds its part (evaluation, diagnosis) to a completed export, in a worker."""
    store, record = find_export(workspace, export_id)
    check(store, record)
    current = getattr(record, kind.part)
    if current and current.status == "running" and worker_alive(current.worker):
        raise UsageError(f"Export {export_id} is being {kind.action.rstrip('e')}ed already.")
    store.update(export_id, **{kind.part: {"status": "running", **state}})
    get_runner().start(workspace, store, kind(record.project_id, export_id))
    return store.get(export_id)


def start_benchmark(workspace: Workspace, export_id: str, requested: dict[str, Any] | None = None) -> ExportRecord:
    """Benchmark a completed export (the file and PyTorch eager) in a background worker.

    Returns the record with a ``running`` entry last in ``benchmarks``; the worker fills it in.

    Raises:
        UsageError / NotFoundError: bad settings, or an export that cannot be benchmarked (nothing starts).
    """
    from exporter.benchmark import add_entry

    store, entry_id = add_entry(workspace, export_id, requested)
    get_runner().start(workspace, store, Benchmark(store.project.id, export_id, entry=entry_id))
    return store.get(export_id)


def start_export_all(workspace: Workspace, project_id: str, experiment_id: str, checkpoint: str = "best",
                     benchmark: dict[str, Any] | None = None, formats: list[str] | None = None) -> dict[str, Any]:
    """Start one export per format × precision this experiment's task can take (of ``formats``; None: every
    format), here and now: each its own record and job, validated, evaluated when the project has a labelled
    set, then benchmarked with ``benchmark``'s settings (None: not benchmarked; nor are files this machine
    cannot run).

    Returns:
        ``{"started": [records], "skipped": [{"format", "variant", "reason"}]}``.

    Raises:
        NotFoundError / UsageError: unknown ids, formats or bad benchmark settings (nothing is started).
    """
    from exporter.benchmark import parse_request
    from exporter.families import needs as model_needs
    from exporter.formats import get_available_formats, get_format

    project = workspace.project(project_id)
    experiment = project.experiment(experiment_id)
    experiment.checkpoint(checkpoint)
    settings = None if benchmark is None else parse_request(benchmark)
    task = experiment.task or project.task
    rows = [row for row in get_available_formats(task, model_needs(task, experiment.model))
            if formats is None or row["name"] in formats]
    for name in set(formats or ()) - {row["name"] for row in rows}:
        get_format(name, require_available=False)  # an unknown name: UnknownFormatError lists the known ones
    started, skipped = [], []
    for row in rows:
        fmt = get_format(row["name"], require_available=False)
        for label, options in fmt.variants:
            if not row["available"]:
                skipped.append({"format": fmt.name, "variant": label, "reason": row["reason"]})
                continue
            try:
                started.append(start_export(workspace, ExportRequest(
                    project.id, experiment.id, checkpoint, fmt.name, dict(options),
                    benchmark=None if fmt.runs_here() else settings)))
            except UsageError as exc:  # e.g. fp16 refused for this task: say why, go on
                skipped.append({"format": fmt.name, "variant": label, "reason": exc.message})
    return {"started": started, "skipped": skipped}


def cancel_benchmark(workspace: Workspace, export_id: str) -> ExportRecord:
    """Stop an export's queued or running benchmark and remove its entry (no half figures are kept)."""
    from exporter.benchmark import drop_entries

    store, record = find_export(workspace, export_id)
    for entry in record.benchmarks:
        if entry.status == "running":
            _runner_of(entry.worker).cancel(entry.worker)  # the worker and its measuring children
    return drop_entries(store, export_id, ("queued", "running"))


def _runner_of(worker: Any) -> Runner:
    """The runner that started the job ``worker`` records (Ray's owner loop ends a cancelled job itself)."""
    if worker is not None and getattr(worker, "runner", None) == "ray":
        from exporter.jobs.cluster import RayRunner

        return RayRunner.shared()
    return LOCAL


def cancel_export(workspace: Workspace, export_id: str) -> ExportRecord:
    """Stop a pending/running export's worker and end its record ``cancelled``."""
    store, record = find_export(workspace, export_id)
    if not record.active:
        return record
    _runner_of(record.worker).cancel(record.worker)
    return end_active(store, record, "cancelled", Cancelled("Cancelled by the user.", stage=record.stage))


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
    for field, kind in SIDE_JOBS.items():
        action = kind.action
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
    return end_active(store, record, "failed", error)
