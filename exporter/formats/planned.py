"""Formats on the roadmap: registered so every surface lists them, unavailable until built."""

from __future__ import annotations

from exporter.formats.registry import ExportFormat, register_format


@register_format("torchscript", display_name="TorchScript", suffix=".pt")
class TorchScriptFormat(ExportFormat):
    """TorchScript (``torch.jit``); not implemented yet — reported as Coming Soon."""


@register_format("openvino", display_name="OpenVINO IR", suffix=".xml")
class OpenVinoFormat(ExportFormat):
    """OpenVINO IR (``.xml`` + ``.bin``); not implemented yet — reported as Coming Soon."""


@register_format("tensorrt", display_name="TensorRT", suffix=".engine")
class TensorRtFormat(ExportFormat):
    """TensorRT engine; not implemented yet — reported as Coming Soon."""
