"""One service function per action, called alike by the CLI, the API and the pages.

An export is two steps so that a background worker can run the second: ``prepare_export``
(``exporter.request``) checks everything cheap and writes a ``pending`` record;
``run_export`` (``exporter.pipeline``) runs it to the end. ``exporter.jobs`` runs the second
step in a worker process; ``export_checkpoint`` runs both here.
"""

from __future__ import annotations

from exporter.pipeline import run_export
from exporter.record import ExportRecord
from exporter.request import ExportRequest, option_specs, prepare_export
from exporter.workspace import Workspace

__all__ = ["ExportRequest", "export_checkpoint", "option_specs", "prepare_export", "run_export"]


def export_checkpoint(workspace: Workspace, request: ExportRequest) -> ExportRecord:
    """Prepare and run an export in this process; returns the final record.

    Raises:
        UsageError / NotFoundError: the request is invalid (no record is written).
    """
    record = prepare_export(workspace, request)
    return run_export(workspace, record.project_id, record.id)
