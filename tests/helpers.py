"""Build real workspaces and checkpoints for tests (no mocks: real torch models on disk)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import ROOT

# Demo (project, experiment) pairs: tensor-compared tasks, then tasks with their own comparison.
DEMO = [("demo-classification", "exp-resnet18-shapes"), ("demo-regression", "exp-resnet18-center"),
        ("demo-anomaly", "exp-padim-resnet18"), ("demo-anomaly", "exp-autoencoder")]
TASK_DEMOS = [("demo-detection", "exp-fasterrcnn-resnet18-fpn"),
              ("demo-instance-segmentation", "exp-maskrcnn-resnet18-fpn"),
              ("demo-segmentation", "exp-lraspp-shapes"), ("demo-oriented", "exp-obb-resnet18")]


def record_fields(**fields: Any) -> dict[str, Any]:
    """Fields for ``ExportStore.create`` of a hand-made record (store and index tests)."""
    return {"project_id": "proj", "experiment_id": "exp", "checkpoint": "best", "format": "onnx",
            "created_at": "x", **fields}


def cli(*args, workspace=None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `python -m exporter ARGS` as a user would (a real subprocess, text output; ``env`` added)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    cmd = [sys.executable, "-m", "exporter", *args]
    if workspace:
        cmd += ["--workspace", str(workspace)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)


def user_class(path: Path, name: str) -> type:
    """A class of a user model file, loaded the way a user's own script would (not through our import)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"user_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)
