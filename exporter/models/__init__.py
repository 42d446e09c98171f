"""The networks the exporter builds and wraps (UI-free, torch): builders, wrappers, post-processing.

Which task uses which is ``exporter.tasks``' business.
"""

from exporter.models.spec import ModelSpec

__all__ = ["ModelSpec"]
