"""What every request works on."""

from __future__ import annotations

from exporter.workspace import Workspace


def workspace() -> Workspace:
    """The workspace each request works on (from ``$AISTUDIO_WORKSPACE``)."""
    return Workspace()
