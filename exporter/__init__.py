"""AI Studio Export: turn trained PyTorch checkpoints into validated deployable files.

Public API::

    from exporter import Workspace, ExportRequest, export_checkpoint
    record = export_checkpoint(Workspace("workspace"), ExportRequest("proj", "exp"))
"""

from exporter.errors import ExportError
from exporter.record import ExportRecord
from exporter.service import ExportRequest, export_checkpoint, prepare_export, run_export
from exporter.version import __version__
from exporter.workspace import Workspace

__all__ = ["ExportError", "ExportRecord", "ExportRequest", "Workspace", "__version__", "export_checkpoint",
           "prepare_export", "run_export"]
