"""Export formats behind one registry (see ``registry.py``)."""

from pathlib import Path
from typing import Any

from exporter.formats.registry import (
    DEFAULT_FORMAT,
    GRAPH_DIAGNOSIS,
    IR_DIAGNOSIS,
    RECORD_PACKAGES,
    REFERENCE_FILE,
    RUNTIME_PACKAGES,
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

__all__ = ["DEFAULT_FORMAT", "GRAPH_DIAGNOSIS", "IR_DIAGNOSIS", "RECORD_PACKAGES", "REFERENCE_FILE", "RUNTIME_PACKAGES",
           "Deployed", "ExportArtifact", "ExportFormat", "ExportJob", "Runner", "TorchRunner", "Usage", "float_graph",
           "format_names", "get_available_formats", "get_format", "register_format"]


def float_graph(job: ExportJob, workdir: Path, progress: Any, **options: Any) -> ExportArtifact:
    """The fp32 ONNX graph of ``job`` in ``workdir`` (what reduced-precision files and OpenVINO IRs are made from,
    and diagnosed against), with a runner."""
    from exporter.formats.onnx import intermediate_onnx

    return intermediate_onnx(job, workdir, progress, **options)
