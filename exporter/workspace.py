"""Discover projects, experiments and checkpoints under a workspace root; write their JSON files.

The layout is the training side's contract (docs/contracts.md: Workspace on disk)::

    projects/<project-id>/project.json
    projects/<project-id>/experiments/<experiment-id>/experiment.json
    projects/<project-id>/experiments/<experiment-id>/checkpoints/{best,last}.ckpt
    projects/<project-id>/data/samples/*.png|jpg
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from exporter.errors import NotFoundError

ENV_WORKSPACE = "AISTUDIO_WORKSPACE"
CHECKPOINT_NAMES = ("best", "last")
SAMPLE_SUFFIXES = (".png", ".jpg", ".jpeg")
VAL_SAMPLES = 16  # validation inputs taken from a labelled set when a project has no samples
LABEL_FOLDERS = {"masks", "ground_truth", "labelTxt"}  # label images of the labelled-set layouts, not inputs
# Ids are folder names: keep them to a safe alphabet so no id can walk out of the tree.
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def resolve_root(path: str | os.PathLike[str] | None = None) -> Path:
    """The workspace root: ``path``, else ``$AISTUDIO_WORKSPACE``, else ``./workspace``."""
    chosen = path or os.environ.get(ENV_WORKSPACE) or "workspace"
    return Path(chosen).expanduser().resolve()


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON object; an unreadable or non-object file reads as ``{}``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def check_id(kind: str, value: str) -> str:
    """Return ``value`` if it is a safe folder id, else raise ``NotFoundError``."""
    if not isinstance(value, str) or not ID_PATTERN.match(value) or ".." in value:
        raise NotFoundError(f"{kind} id {value!r} is not valid: use letters, digits, '.', '_' and '-'.")
    return value


@dataclass(frozen=True)
class CheckpointRef:
    """One checkpoint of an experiment (``best`` or ``last``)."""

    name: str
    path: Path
    epoch: int | None = None
    metric: float | None = None
    metric_name: str | None = None

    @property
    def exists(self) -> bool:
        return self.path.is_file()

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size if self.exists else 0


@dataclass(frozen=True)
class Experiment:
    """An experiment folder and its ``experiment.json``."""

    id: str
    project_id: str
    path: Path
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.meta.get("name") or self.id)

    @property
    def task(self) -> str | None:
        return self.meta.get("task") or self.model.get("task")

    @property
    def model(self) -> dict[str, Any]:
        model = self.meta.get("model")
        return model if isinstance(model, dict) else {}

    @property
    def metrics(self) -> dict[str, Any]:
        metrics = self.meta.get("metrics")
        return metrics if isinstance(metrics, dict) else {}

    def describe(self) -> dict[str, Any]:
        """The experiment as JSON (API, CLI): ids, task, model, metrics and its checkpoints."""
        return {"project_id": self.project_id, "id": self.id, "name": self.name, "task": self.task,
                "architecture": self.model.get("architecture"), "model": self.model, "metrics": self.metrics,
                "checkpoints": [{"name": c.name, "epoch": c.epoch, "metric": c.metric, "size_bytes": c.size_bytes}
                                for c in self.checkpoints()]}

    def checkpoints(self) -> list[CheckpointRef]:
        """The experiment's ``best`` / ``last`` checkpoints that exist on disk."""
        return [ref for ref in (self._checkpoint_ref(n) for n in CHECKPOINT_NAMES) if ref.exists]

    def checkpoint(self, name: str) -> CheckpointRef:
        """The named checkpoint; raises ``NotFoundError`` listing the available ones."""
        ref = self._checkpoint_ref(name) if name in CHECKPOINT_NAMES else None
        if ref is None or not ref.exists:
            have = ", ".join(r.name for r in self.checkpoints()) or "none"
            raise NotFoundError(
                f"Experiment {self.id!r} has no checkpoint {name!r} (available: {have})."
            )
        return ref

    def _checkpoint_ref(self, name: str) -> CheckpointRef:
        entry = (self.meta.get("checkpoints") or {}).get(name) or {}
        entry = entry if isinstance(entry, dict) else {}
        rel = entry.get("path") or f"checkpoints/{name}.ckpt"
        path = Path(rel) if Path(rel).is_absolute() else self.path / rel
        metric = entry.get("metric")
        return CheckpointRef(
            name=name,
            path=path,
            epoch=entry.get("epoch"),
            metric=float(metric) if isinstance(metric, (int, float)) else None,
            metric_name=str(entry["metric_name"]) if entry.get("metric_name") else None,
        )


@dataclass(frozen=True)
class Project:
    """A project folder and its ``project.json``."""

    id: str
    path: Path
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.meta.get("name") or self.id)

    @property
    def task(self) -> str | None:
        return self.meta.get("task")

    @property
    def exports_dir(self) -> Path:
        return self.path / "exports"

    def describe(self) -> dict[str, Any]:
        """The project as JSON (API, CLI): its ``project.json`` with every experiment described."""
        return {**self.meta, "id": self.id, "name": self.name, "task": self.task,
                "experiments": [e.describe() for e in self.experiments()]}

    def experiments(self) -> list[Experiment]:
        """All experiments, oldest first (by ``created_at``, then id)."""
        root = self.path / "experiments"
        found = [
            Experiment(d.name, self.id, d, read_json(d / "experiment.json"))
            for d in sorted(root.iterdir()) if (d / "experiment.json").is_file()
        ] if root.is_dir() else []
        return sorted(found, key=lambda e: (str(e.meta.get("created_at", "")), e.id))

    def experiment(self, experiment_id: str) -> Experiment:
        """The experiment with this id; raises ``NotFoundError`` listing the known ones."""
        check_id("experiment", experiment_id)
        path = self.path / "experiments" / experiment_id
        if not (path / "experiment.json").is_file():
            known = ", ".join(e.id for e in self.experiments()) or "none"
            raise NotFoundError(
                f"Project {self.id!r} has no experiment {experiment_id!r} (known: {known})."
            )
        return Experiment(experiment_id, self.id, path, read_json(path / "experiment.json"))

    def sample_images(self) -> list[Path]:
        """Images in ``data/samples`` (sorted), used as realistic validation inputs; without any, up to
        ``VAL_SAMPLES`` images spread over the labelled set (``data/val``, its label folders left out) — an imported
        model's own data is a better input than noise (anomalib's scores saturate on noise)."""
        folder = self.path / "data" / "samples"
        if folder.is_dir() and (found := sorted(p for p in folder.iterdir() if p.suffix.lower() in SAMPLE_SUFFIXES)):
            return found
        val = self.path / "data" / "val"
        if not val.is_dir():
            return []
        images = sorted(p for p in val.rglob("*") if p.suffix.lower() in SAMPLE_SUFFIXES
                        and not LABEL_FOLDERS & set(p.relative_to(val).parts[:-1]))
        return images[::max(1, len(images) // VAL_SAMPLES)][:VAL_SAMPLES]


class Workspace:
    """Read-only view of the projects under a workspace root."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = resolve_root(root)

    @property
    def projects_dir(self) -> Path:
        return self.root / "projects"

    def projects(self) -> list[Project]:
        """All projects, sorted by id."""
        if not self.projects_dir.is_dir():
            return []
        return [
            Project(d.name, d, read_json(d / "project.json"))
            for d in sorted(self.projects_dir.iterdir()) if (d / "project.json").is_file()
        ]

    def project(self, project_id: str) -> Project:
        """The project with this id; raises ``NotFoundError`` listing the known ones."""
        check_id("project", project_id)
        path = self.projects_dir / project_id
        if not (path / "project.json").is_file():
            known = ", ".join(p.id for p in self.projects()) or "none"
            raise NotFoundError(f"No project {project_id!r} in {self.root} (known: {known}).")
        return Project(project_id, path, read_json(path / "project.json"))


def utc_now() -> str:
    """ISO-8601 UTC timestamp with a ``Z`` suffix."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def write_project_json(folder: Path, project_id: str, name: str, task: str, **extra: Any) -> dict[str, Any]:
    """Write a project's ``project.json`` (docs/contracts.md) into ``folder``; the importer and the demo use it."""
    meta = {"id": project_id, "name": name, "task": task, "created_at": utc_now(), **extra}
    _write_json(folder / "project.json", meta)
    return meta


def write_experiment_json(folder: Path, *, experiment_id: str, name: str, project_id: str, task: str,
                          model: dict[str, Any], checkpoints: dict[str, Any], metrics: dict[str, Any],
                          status: str, **extra: Any) -> dict[str, Any]:
    """Write an experiment's ``experiment.json`` (docs/contracts.md) into ``folder``; returns it."""
    meta = {"id": experiment_id, "name": name, "project_id": project_id, "task": task, "model": model,
            "metrics": metrics, "status": status, "created_at": utc_now(), **extra, "checkpoints": checkpoints}
    return _write_json(folder / "experiment.json", meta)


def _write_json(path: Path, data: dict[str, Any]) -> dict[str, Any]:
    """Hyper-parameters can hold tuples, tensors or paths: keep what JSON can say."""
    text = json.dumps(data, indent=2, default=str)
    path.write_text(text)
    return json.loads(text)
