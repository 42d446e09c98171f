"""A job is one typed thing: what runs on one export, by whom it is started and in which worker it runs.

- ``Export`` runs a prepared export to the end (then the benchmarks queued behind it);
- ``Evaluate`` / ``Diagnose`` add their part (``evaluation`` / ``diagnosis``) to a completed export;
- ``Benchmark`` fills one benchmark entry of a completed export.

A job is frozen and says everything about itself: the record part it fills and whether the record still expects
it (``still_running``), where its worker is recorded (``record_worker``), what a worker does (``handle``) — and
how it travels to a worker process: ``argv`` writes it on the ``python -m exporter worker`` command line and
``from_args`` reads it back, the one place either happens. A new kind of job is one class here with its handler.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from exporter.errors import ExportError
    from exporter.record import ExportRecord
    from exporter.store import ExportStore
    from exporter.workspace import Workspace

JOB_OPTION, ENTRY_OPTION = "--job", "--entry"  # the worker command line's words for a job (only here)


@dataclass(frozen=True)
class Job:
    """One job on export ``export_id`` of project ``project_id``."""

    project_id: str
    export_id: str
    kind: ClassVar[str] = ""
    part: ClassVar[str | None] = None  # the record part a side job fills while "running"
    action: ClassVar[str] = ""  # the verb the user would run again ("evaluate")

    def argv(self) -> list[str]:
        """The worker's command-line arguments for this job (``from_args`` reads them back)."""
        return ["--project", self.project_id, "--export-id", self.export_id, JOB_OPTION, self.kind]

    def still_running(self, record: ExportRecord) -> bool:
        """Whether the record still expects this job: not cancelled, deleted or ended meanwhile."""
        if self.part:
            part = getattr(record, self.part)
            return part is not None and part.status == "running"
        return record.active

    def record_worker(self, store: ExportStore, worker: dict[str, Any]) -> bool:
        """Write ``worker`` where the record keeps this job's worker, unless the job has ended meanwhile (a fast
        job may finish before it is recorded, a cancelled one was ended by its canceller); whether it was written."""
        with store.lock():
            record = store.get(self.export_id)
            if self.still_running(record):
                self._store_worker(store, record, worker)
                return True
        return False

    def _store_worker(self, store: ExportStore, record: ExportRecord, worker: dict[str, Any]) -> None:
        store.update(self.export_id, **{self.part: {**getattr(record, self.part).model_dump(), "worker": worker}})

    def handle(self, workspace: Workspace) -> ExportRecord:
        """Do the job in this process (a local worker, a Ray task); returns the record."""
        raise NotImplementedError

    def exit_code(self, record: ExportRecord) -> int:
        """The worker process's exit status once ``handle`` returned ``record``."""
        return 0 if record.status == "completed" else 1


@dataclass(frozen=True)
class Export(Job):
    """Run a prepared export, then the benchmarks queued behind it."""

    kind: ClassVar[str] = "export"

    def _store_worker(self, store: ExportStore, record: ExportRecord, worker: dict[str, Any]) -> None:
        store.update(self.export_id, worker=worker)

    def handle(self, workspace: Workspace) -> ExportRecord:
        from exporter.benchmark import drop_entries, run_benchmark
        from exporter.pipeline import run_export
        from exporter.store import ExportStore

        record = run_export(workspace, self.project_id, self.export_id)
        queued = [b.id for b in record.benchmarks if b.status == "queued"]
        if record.status != "completed":
            return drop_entries(ExportStore.for_project(workspace, self.project_id), self.export_id)
        for entry_id in queued:
            record = run_benchmark(workspace, self.export_id, entry_id)
        return record


@dataclass(frozen=True)
class Evaluate(Job):
    """Evaluate a completed export on its project's labelled set (``evaluation.requested``'s settings)."""

    kind: ClassVar[str] = "evaluate"
    part: ClassVar[str | None] = "evaluation"
    action: ClassVar[str] = "evaluate"

    def handle(self, workspace: Workspace) -> ExportRecord:
        from exporter.service import evaluate_export
        from exporter.store import find_export

        record = find_export(workspace, self.export_id)[1]
        return _side(workspace, self.export_id, lambda: evaluate_export(
            workspace, self.export_id, getattr(record.evaluation, "requested", None) or {}))

    def exit_code(self, record: ExportRecord) -> int:
        return 1 if record.gate_failed or (record.evaluation and record.evaluation.status == "failed") else 0


@dataclass(frozen=True)
class Diagnose(Job):
    """Diagnose a completed export layer by layer."""

    kind: ClassVar[str] = "diagnose"
    part: ClassVar[str | None] = "diagnosis"
    action: ClassVar[str] = "diagnose"

    def handle(self, workspace: Workspace) -> ExportRecord:
        from exporter.service import diagnose_export

        return _side(workspace, self.export_id, lambda: diagnose_export(workspace, self.export_id))

    def exit_code(self, record: ExportRecord) -> int:
        return 0


@dataclass(frozen=True)
class Benchmark(Job):
    """Fill benchmark entry ``entry`` of a completed export (the file and PyTorch eager)."""

    entry: str = ""
    kind: ClassVar[str] = "benchmark"

    def argv(self) -> list[str]:
        return [*super().argv(), ENTRY_OPTION, self.entry]

    def still_running(self, record: ExportRecord) -> bool:
        return any(b.id == self.entry for b in record.benchmarks)

    def _store_worker(self, store: ExportStore, record: ExportRecord, worker: dict[str, Any]) -> None:
        from exporter.benchmark import update_entry

        update_entry(store, self.export_id, self.entry, worker=worker)

    def handle(self, workspace: Workspace) -> ExportRecord:
        from exporter.benchmark import run_benchmark

        return run_benchmark(workspace, self.export_id, self.entry)

    def exit_code(self, record: ExportRecord) -> int:
        return 0


KINDS: dict[str, type[Job]] = {cls.kind: cls for cls in (Export, Evaluate, Diagnose, Benchmark)}
SIDE_JOBS: dict[str, type[Job]] = {cls.part: cls for cls in KINDS.values() if cls.part}  # by the part they fill


def _side(workspace: Workspace, export_id: str, run: Callable[[], ExportRecord]) -> ExportRecord:
    """A side job stores a failure in its part: a typed error raised before it started is not raised here."""
    from exporter.errors import ExportError
    from exporter.store import find_export

    try:
        return run()
    except ExportError:
        return find_export(workspace, export_id)[1]


def end_active(store: ExportStore, record: ExportRecord, status: str, error: ExportError) -> ExportRecord:
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


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    """The worker command line's job arguments (``Job.argv`` writes them)."""
    parser.add_argument("--project", required=True)
    parser.add_argument("--export-id", required=True)
    parser.add_argument(JOB_OPTION, dest="job_kind", choices=sorted(KINDS), default=Export.kind)
    parser.add_argument(ENTRY_OPTION, dest="job_entry", default="", help="a benchmark job's entry id")


def from_args(args: argparse.Namespace) -> Job:
    """The job a worker's command line names (``add_worker_arguments``)."""
    cls = KINDS[args.job_kind]
    extra = {"entry": args.job_entry} if cls is Benchmark else {}
    return cls(project_id=args.project, export_id=args.export_id, **extra)
