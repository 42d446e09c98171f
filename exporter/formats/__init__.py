"""Export formats behind one registry (see ``registry.py``)."""

from exporter.formats.registry import (
    Deployed,
    ExportArtifact,
    ExportFormat,
    ExportJob,
    Runner,
    TorchRunner,
    Usage,
    format_names,
    get_available_formats,
    get_format,
    register_format,
)

__all__ = ["Deployed", "ExportArtifact", "ExportFormat", "ExportJob", "Runner", "TorchRunner", "Usage", "format_names",
           "get_available_formats", "get_format", "register_format"]
