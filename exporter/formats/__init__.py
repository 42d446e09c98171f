"""Export formats behind one registry (see ``registry.py``)."""

from exporter.formats.registry import (
    ExportArtifact,
    ExportFormat,
    ExportJob,
    Runner,
    Usage,
    format_names,
    get_available_formats,
    get_format,
    register_format,
)

__all__ = ["ExportArtifact", "ExportFormat", "ExportJob", "Runner", "Usage", "format_names", "get_available_formats",
           "get_format", "register_format"]
