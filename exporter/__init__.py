"""AI Studio Export: turn trained PyTorch checkpoints into validated deployable files.

Public API::

    from exporter import Workspace, ExportRequest, export_checkpoint
    record = export_checkpoint(Workspace("workspace"), ExportRequest("proj", "exp"))
"""

__version__ = "0.1.0"

from exporter.errors import ExportError  # noqa: E402
from exporter.service import ExportRequest, export_checkpoint, prepare_export, run_export  # noqa: E402
from exporter.workspace import Workspace  # noqa: E402

__all__ = ["ExportError", "ExportRequest", "Workspace", "__version__", "export_checkpoint",
           "prepare_export", "run_export"]
