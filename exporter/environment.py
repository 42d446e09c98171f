"""The software an exported file was made with: what a user needs to run or reproduce it."""

from __future__ import annotations

import platform
import sys
from importlib import metadata as importlib_metadata
from typing import Any

from exporter.formats import RECORD_PACKAGES
from exporter.version import __version__


def environment(info: dict[str, Any]) -> dict[str, Any]:
    """Versions a user needs to know to run (or reproduce) the file."""
    def version(name: str) -> str | None:
        try:
            return importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            return None

    return {"python": platform.python_version(), "platform": sys.platform,
            "aistudio_export": __version__,
            **{pkg: version(pkg) for pkg in ("torch", "torchvision", *RECORD_PACKAGES)},
            "opset": info.get("opset"), "ir_version": info.get("ir_version")}
