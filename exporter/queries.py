"""What the front ends read — projects, experiments, export summaries and records — as typed results, through one
module: the pages and the CLI never construct a store or read an index entry as a dict.

Writes go through the services (``exporter.jobs``, ``exporter.service``, ``exporter.importer``); this module only
reads.
"""

from __future__ import annotations

from pathlib import Path

from exporter.record import ExportRecord, ExportSummary
from exporter.store import ExportStore, all_exports, find_export
from exporter.workspace import Project, Workspace

__all__ = ["ExportSummary", "export_folder", "exports", "index_file", "project", "projects", "record", "records"]


def projects(workspace: Workspace) -> list[Project]:
    """Every project of the workspace."""
    return workspace.projects()


def project(workspace: Workspace, project_id: str) -> Project:
    """One project; raises ``NotFoundError``."""
    return workspace.project(project_id)


def exports(workspace: Workspace, project_id: str | None = None, experiment_id: str | None = None) -> list[
        ExportSummary]:
    """Export summaries (index entries) of one project or all, of one experiment or all, newest first."""
    return [ExportSummary.model_validate(entry) for entry in all_exports(workspace, project_id)
            if experiment_id is None or entry.get("experiment_id") == experiment_id]


def record(workspace: Workspace, export_id: str) -> ExportRecord:
    """One export's full record, wherever its project is; raises ``NotFoundError``."""
    return find_export(workspace, export_id)[1]


def records(workspace: Workspace, export_ids: list[str]) -> list[ExportRecord]:
    """Full records, in the order asked."""
    return [record(workspace, export_id) for export_id in export_ids]


def export_folder(workspace: Workspace, export: ExportRecord | ExportSummary) -> Path:
    """The folder an export's files are in."""
    return ExportStore(workspace.project(export.project_id)).export_dir(export.id)


def index_file(workspace: Workspace, project_id: str) -> Path:
    """The project's export index: it changes whenever an export of the project does."""
    return ExportStore(workspace.project(project_id)).index_path
