"""One service function per action, called alike by the CLI, the API and the pages.

An export is two steps so that a background worker can run the second: ``prepare_export``
(``exporter.request``) checks everything cheap and writes a ``pending`` record;
``run_export`` (``exporter.pipeline``) runs it to the end. ``exporter.jobs`` runs the second
step in a worker process; ``export_checkpoint`` runs both here.
"""

from __future__ import annotations

from typing import Any

from exporter.errors import ExportError, one_line, resource_error
from exporter.pipeline import build_wrapped, run_export
from exporter.record import ExportRecord
from exporter.request import ExportRequest, option_specs, prepare_export
from exporter.store import find_export
from exporter.workspace import Workspace

__all__ = ["ExportRequest", "benchmark_export", "diagnose_export", "evaluate_export", "export_checkpoint",
           "option_specs", "prepare_export", "run_export"]


def export_checkpoint(workspace: Workspace, request: ExportRequest) -> ExportRecord:
    """Prepare and run an export in this process; returns the final record.

    Raises:
        UsageError / NotFoundError: the request is invalid (no record is written).
    """
    record = prepare_export(workspace, request)
    return run_export(workspace, record.project_id, record.id)


def evaluate_export(workspace: Workspace, export_id: str, overrides: dict[str, Any] | None = None) -> ExportRecord:
    """Evaluate a completed export on its project's labelled set (``data/val``) and store the result.

    ``overrides`` may set ``max_images`` and ``max_metric_drop``; the export's own options give the rest.

    Raises:
        NotFoundError: no such export, or its files are gone.
        UsageError: the export is not completed, or its checkpoint changed since.
        DatasetError: the project has no labelled set, or not in the task's layout.
    """
    store, record = find_export(workspace, export_id)
    check_evaluable(store, record)
    return _store_part(store, export_id, "evaluation", "evaluate",
                       lambda: _evaluate_files(workspace, store, record, overrides or {}))


def benchmark_export(workspace: Workspace, export_id: str, requested: dict[str, Any] | None = None) -> ExportRecord:
    """Benchmark a completed export (the file and PyTorch eager) in this process; returns the record,
    whose last ``benchmarks`` entry is this run (``completed``, or ``failed`` with the error).

    Raises:
        UsageError / NotFoundError: bad settings, or an export that cannot be benchmarked.
    """
    from exporter.benchmark import add_entry, run_benchmark

    _, entry_id = add_entry(workspace, export_id, requested)
    return run_benchmark(workspace, export_id, entry_id)


def diagnose_export(workspace: Workspace, export_id: str) -> ExportRecord:
    """Diagnose where a completed export diverges from its reference, layer by layer, and store it.

    Raises:
        NotFoundError: no such export, or its files are gone.
        UsageError: the export is not completed, or its checkpoint changed since.
    """
    from exporter.pipeline import diagnose
    from exporter.report import require_current

    store, record = find_export(workspace, export_id)
    require_current(store, record, "diagnose")
    return _store_part(store, export_id, "diagnosis", "diagnose", lambda: diagnose(workspace, store, record))


def _store_part(store: Any, export_id: str, field: str, stage: str, make: Any) -> ExportRecord:
    """Store ``make()`` as the export's ``field``; a failure is stored as ``failed`` with its error, then raised."""
    try:
        result = make()
    except ExportError as exc:
        store.update(export_id, **{field: {"status": "failed", "error": {**exc.to_dict(), "stage": stage}}})
        raise
    except Exception as exc:  # noqa: BLE001 - a bug must still end the job, readably
        error = resource_error(exc, stage) or ExportError(f"Internal error: {one_line(exc)}", stage=stage)
        store.update(export_id, **{field: {"status": "failed", "error": error.to_dict()}})
        raise error from None
    return store.update(export_id, **{field: result})


def check_evaluable(store: Any, record: ExportRecord) -> None:
    """Refuse, before any work, an export that cannot be evaluated (and say what to do)."""
    from exporter.evaluation import require_val_folder
    from exporter.report import require_current

    require_current(store, record, "evaluate")
    require_val_folder(store.project.path)


def _evaluate_files(workspace: Workspace, store: Any, record: ExportRecord, overrides: dict[str, Any]) -> dict:
    from exporter import evaluation
    from exporter.checkpoint import load_checkpoint
    from exporter.formats import get_format
    from exporter.tasks import get_task

    project = store.project
    experiment = project.experiment(record.experiment_id)
    options = {**record.options, **{k: v for k, v in overrides.items() if v is not None}}
    spec, module = build_wrapped(load_checkpoint(experiment.checkpoint(record.checkpoint).path), experiment,
                                 project.task, options)
    fmt = get_format(record.format)
    runner = fmt.load(store.export_dir(record.id) / str(record.output_file), record.model.model_dump())
    try:
        inputs = evaluation.prepare(get_task(spec.task), spec, options, project.path,
                                    tuple(record.model.input_shape or (1, *spec.input_size)))
        return evaluation.evaluate(inputs, module, runner, input_name=record.model.inputs[0].name,
                                   output_names=tuple(o.name for o in record.model.outputs),
                                   checkpoint_sha256=str(record.checkpoint_sha256), cache_root=workspace.root,
                                   runtime=fmt.name, gallery=store.export_dir(record.id) / evaluation.GALLERY_DIR)
    finally:
        runner.close()
