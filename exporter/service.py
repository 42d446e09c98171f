"""``export_checkpoint``: the one export path that the CLI, the API and the pages call.

An export is two steps so that a background worker can run the second:
``prepare_export`` checks everything cheap (ids, format, options) and writes a ``pending``
record; ``run_export`` loads, builds, exports, validates and stores, updating the record's
progress, and always ends it ``completed`` or ``failed`` with a typed error.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from exporter import __version__
from exporter.errors import ExportError, InvalidOptionError, one_line, resource_error
from exporter.store import PARTIAL_DIR, ExportStore, utc_now
from exporter.workspace import Workspace

MAX_WORKERS_ENV = "AISTUDIO_MAX_WORKERS"
STAGES = {"load": 0.05, "build": 0.15, "export": 0.3, "simplify": 0.55, "validate": 0.7, "store": 0.9}


@dataclass(frozen=True)
class ExportRequest:
    """What a user asks for: which checkpoint, which format, which options."""

    project_id: str
    experiment_id: str
    checkpoint: str = "best"
    format: str = "onnx"
    options: dict[str, Any] = field(default_factory=dict)


def prepare_export(workspace: Workspace, request: ExportRequest) -> dict[str, Any]:
    """Check a request and write its ``pending`` record.

    Raises:
        NotFoundError: unknown project, experiment or checkpoint.
        UsageError: unknown/unavailable format or a bad option (nothing is written).
    """
    from exporter.formats import get_format
    from exporter.options import parse_options

    project = workspace.project(request.project_id)
    experiment = project.experiment(request.experiment_id)
    ref = experiment.checkpoint(request.checkpoint)
    fmt = get_format(request.format)
    options = parse_options(option_specs(fmt, experiment.task or project.task), request.options)
    fmt.check_options(options)
    fmt.check_task(experiment.task or project.task, options)
    check_task_options(experiment.task or project.task, options)
    record = {
        "id": None, "project_id": project.id, "experiment_id": experiment.id,
        "checkpoint": ref.name, "format": fmt.name, "options": options,
        "status": "pending", "progress": {"stage": "load", "fraction": 0.0},
        "created_at": utc_now(), "started_at": None, "finished_at": None,
        "output_file": None, "files": [], "output_size_mb": None,
        "model": {"task": experiment.task, "architecture": experiment.model.get("architecture")},
        "validation": None, "timings_s": {}, "warnings": [], "error": None,
        "checkpoint_path": str(ref.path), "checkpoint_sha256": None,
        "worker": {"pid": os.getpid()},
    }
    return ExportStore(project).create(record)


def option_specs(fmt: Any, task: str | None) -> tuple[Any, ...]:
    """Every option of an export: the format's (common ones first), then the task's."""
    from exporter.models.task_options import task_option_specs

    return tuple(fmt.options()) + task_option_specs(task)


def check_task_options(task: str | None, options: dict[str, Any]) -> None:
    """Reject an opset too old for the task's graph (e.g. NonMaxSuppression needs 11).

    Raises:
        InvalidOptionError: with the lowest opset that works.
    """
    from exporter.models.task_options import MIN_OPSET

    needed = MIN_OPSET.get(task or "", 0)
    opset = options.get("opset_version")
    if opset is not None and opset < needed:
        raise InvalidOptionError(
            f"{task} graphs need ONNX opset ≥ {needed} (NonMaxSuppression, RoiAlign, TopK with a dynamic k); "
            f"opset_version={opset} cannot hold them. Use opset_version={needed} or higher.")


def export_checkpoint(workspace: Workspace, request: ExportRequest) -> dict[str, Any]:
    """Prepare and run an export in this process; returns the final record.

    Raises:
        UsageError / NotFoundError: the request is invalid (no record is written).
    """
    record = prepare_export(workspace, request)
    return run_export(workspace, record["project_id"], record["id"])


def run_export(workspace: Workspace, project_id: str, export_id: str,
               on_progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run a prepared export to the end and return its final record (never raises ExportError)."""
    from exporter.jobs import process_identity

    store = ExportStore.for_project(workspace, project_id)
    store.update(export_id, worker=process_identity(os.getpid()))
    with worker_slot(workspace.root):  # queued exports wait here, still "pending"
        record = store.update(export_id, status="running", started_at=utc_now())
        workdir = store.export_dir(export_id) / PARTIAL_DIR
        pipeline = _Pipeline(workspace, store, record, workdir, on_progress)
        try:
            return pipeline.run()
        except ExportError as exc:
            return pipeline.fail(exc)
        except Exception as exc:  # noqa: BLE001 - a bug must still end the record, readably
            error = resource_error(exc, pipeline.stage)
            return pipeline.fail(error or ExportError(f"Internal error: {one_line(exc)}", stage=pipeline.stage))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


def max_workers() -> int:
    """How many exports may run at once (``$AISTUDIO_MAX_WORKERS``, default: CPU count)."""
    try:
        return max(1, int(os.environ.get(MAX_WORKERS_ENV, "")))
    except ValueError:
        return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def worker_slot(root: Path, poll_s: float = 0.2):
    """Hold one of ``max_workers()`` slot locks for the duration of an export.

    The slots are file locks under the workspace, so the limit holds across the server, CLI
    runs and worker processes alike, and a killed process frees its slot at once.
    """
    from filelock import FileLock, Timeout

    folder = root / ".export-slots"
    folder.mkdir(parents=True, exist_ok=True)
    while True:
        for index in range(max_workers()):
            lock = FileLock(str(folder / f"slot-{index}.lock"), thread_local=False)
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue
            try:
                yield index
            finally:
                lock.release()
            return
        time.sleep(poll_s)


class _Pipeline:
    """The stages of one export; keeps the record's progress and timings current."""

    def __init__(self, workspace: Workspace, store: ExportStore, record: dict[str, Any],
                 workdir: Path, on_progress: Callable[[dict[str, Any]], None] | None) -> None:
        self.workspace, self.store, self.record, self.workdir = workspace, store, record, workdir
        self.on_progress = on_progress
        self.stage = "load"
        self.timings: dict[str, float] = {}
        self._clock = time.perf_counter()

    def enter(self, stage: str) -> None:
        """Close the current stage's timer and announce ``stage``."""
        if stage == self.stage:
            return
        now = time.perf_counter()
        self.timings[self.stage] = round(self.timings.get(self.stage, 0.0) + now - self._clock, 4)
        self.stage, self._clock = stage, now
        self._save(progress={"stage": stage, "fraction": STAGES.get(stage, 0.0)}, timings_s=self.timings)

    def run(self) -> dict[str, Any]:
        from exporter.checkpoint import load_checkpoint
        from exporter.formats import get_format

        project = self.store.project
        experiment = project.experiment(self.record["experiment_id"])
        ref = experiment.checkpoint(self.record["checkpoint"])
        fmt = get_format(self.record["format"])
        options = self.record["options"]
        ckpt = load_checkpoint(ref.path)
        self.enter("build")
        spec, module, shape = _build(ckpt, experiment, project.task, options)
        sha256 = ckpt.sha256
        del ckpt  # the weights live in the module now; keeping the state dict too would add 1× to the peak
        self._save(checkpoint_sha256=sha256, model=spec.metadata())
        self.workdir.mkdir(parents=True, exist_ok=True)
        samples = project.sample_images()
        pool, pool_kind = _input_pool(samples, shape, spec, options)
        job = _job(module, spec, shape, options, self.record, sha256, pool)
        self.enter("export")
        artifact = fmt.export(job, self.workdir, self.enter)
        self.enter("validate")
        try:
            report = _validate(job, artifact.runner, pool, pool_kind, fmt, len(samples))
        finally:
            getattr(artifact.runner, "close", lambda: None)()
        self.enter("store")
        files = _publish(artifact.files, self.store.export_dir(self.record["id"]))
        self.enter("done")
        timings = {k: v for k, v in self.timings.items() if k != "done"}
        return self._save(
            status="completed", finished_at=utc_now(), progress={"stage": "done", "fraction": 1.0},
            output_file=files[0]["name"], files=files,
            output_size_mb=round(sum(f["size_bytes"] for f in files) / 1e6, 3),
            model={**spec.metadata(), **artifact.info, "input_shape": list(shape)},
            validation=report.to_dict(), warnings=artifact.warnings, timings_s=timings,
            environment=environment(artifact.info), error=None)

    def fail(self, exc: ExportError) -> dict[str, Any]:
        """End the record ``failed`` with the error; no model file is left behind."""
        error = exc.to_dict()
        error["stage"] = error.get("stage") or self.stage
        self.store.clear_outputs(self.record["id"])
        return self._save(status="failed", finished_at=utc_now(), error=error,
                          progress={"stage": self.stage, "fraction": 1.0})

    def _save(self, **changes: Any) -> dict[str, Any]:
        self.record = self.store.update(self.record["id"], **changes)
        if self.on_progress:
            self.on_progress(self.record)
        return self.record


def build_wrapped(ckpt: Any, experiment: Any, project_task: str | None = None,
                  options: dict[str, Any] | None = None):
    """The checkpoint's model with its weights, wrapped for export (eval mode, clean outputs).

    Returns:
        ``(spec, module)``.

    Raises:
        ArchitectureError / StateDictMismatchError: no builder, or the weights do not fit.
    """
    import dataclasses

    from exporter.checkpoint import load_weights
    from exporter.models import ModelSpec, get_task

    spec = ModelSpec.resolve(ckpt.hyper_parameters, experiment.model,
                             task_hint=experiment.task or project_task)
    adapter = get_task(spec.task)
    if adapter.input_normalization is not None:  # the graph normalises: it takes images in [0, 1]
        spec = dataclasses.replace(spec, normalization=dict(adapter.input_normalization))
    model = adapter.build(spec)
    load_weights(model, ckpt.state_dict)
    return spec, adapter.wrap(model.eval(), spec, options)


def _build(ckpt: Any, experiment: Any, project_task: str | None, options: dict[str, Any]):
    import torch

    spec, module = build_wrapped(ckpt, experiment, project_task, options)
    shape = tuple(options.get("input_shape") or (1, *spec.input_size))
    if shape[1] != spec.input_size[0]:
        raise InvalidOptionError(
            f"input_shape has {shape[1]} channels but the model takes {spec.input_size[0]}.",
            stage="build")
    try:
        with torch.no_grad():
            module(torch.zeros(*shape))
    except Exception as exc:  # noqa: BLE001
        raise resource_error(exc, "build") or InvalidOptionError(
            f"The model cannot run at input_shape {list(shape)}: {one_line(exc, 240)}", stage="build") from None
    return spec, module, shape


def _job(module: Any, spec: Any, shape: tuple, options: dict[str, Any], record: dict[str, Any],
         sha256: str, pool: Any):
    import json

    from exporter.formats import ExportJob
    from exporter.models import get_task

    adapter = get_task(spec.task)
    meta = {
        "task": spec.task, "architecture": spec.architecture,
        "class_names": json.dumps(list(spec.class_names)),
        "normalization": json.dumps(spec.normalization), "input_size": json.dumps(list(spec.input_size)),
        "num_classes": str(spec.num_classes), "checkpoint_sha256": sha256,
        "checkpoint": record["checkpoint"], "project_id": record["project_id"],
        "experiment_id": record["experiment_id"], "export_id": record["id"],
        "exporter_version": f"aistudio-export {__version__}",
    }
    job = ExportJob(module=module, spec=spec, input_shape=shape,  # type: ignore[arg-type]
                    dynamic_batch=options["dynamic_batch"], input_names=adapter.input_names,
                    output_names=adapter.outputs(options), options=options, metadata=meta,
                    calibration=pool.numpy())
    settings = task_settings(job)
    if settings:  # e.g. score/IoU thresholds and max_detections baked into the graph
        meta["postprocess"] = json.dumps(settings)
    return job


def _input_pool(samples: list[Path], shape: tuple, spec: Any, options: dict[str, Any]):
    from exporter.validation import input_pool

    return input_pool(samples, tuple(shape[1:]), spec.normalization,
                      extra_random=max(0, options.get("calibration_samples", 0) - len(samples)))


def _validate(job: Any, runner: Any, pool: Any, pool_kind: str, fmt: Any, n_samples: int):
    from exporter.task_validation import TOLERANCE_FACTOR
    from exporter.validation import MAX_SAMPLE_IMAGES, VALIDATION_IMAGES, validate

    options = job.options
    sizes = [1, 2] if job.dynamic_batch else [job.input_shape[0]]
    task = job.spec.task
    tolerance = options["tolerance"] or fmt.default_tolerance(options) * TOLERANCE_FACTOR.get(task, 1.0)
    return validate(job.module, runner, input_name=job.input_names[0], output_names=job.output_names,
                    pool=pool[:VALIDATION_IMAGES], pool_kind=pool_kind, batch_sizes=sizes, tolerance=tolerance,
                    task=task, min_agreement=fmt.min_agreement(options),
                    n_samples=min(n_samples, MAX_SAMPLE_IMAGES), settings=task_settings(job))


def task_settings(job: Any) -> dict[str, Any]:
    """Task options with the thresholds the wrapped model actually applies (model defaults filled in)."""
    from exporter.models.task_options import task_option_specs

    settings = {spec.name: job.options.get(spec.name) for spec in task_option_specs(job.spec.task)}
    for name in ("score_threshold", "iou_threshold", "max_detections"):
        if hasattr(job.module, name):
            settings[name] = getattr(job.module, name)
    return settings


def _publish(files: list[Path], folder: Path) -> list[dict[str, Any]]:
    """Move finished files into the export folder, primary file last, with their sha256."""
    from exporter.checkpoint import file_sha256
    from exporter.errors import OutputFileError

    rows = [{"name": p.name, "size_bytes": p.stat().st_size, "sha256": file_sha256(p)} for p in files]
    try:
        for path in reversed(files):  # data files first: model.onnx appears only once complete
            os.replace(path, folder / path.name)
    except OSError as exc:
        raise OutputFileError(f"Could not move the exported file into place: {exc}", stage="store") from None
    return rows


def environment(info: dict[str, Any]) -> dict[str, Any]:
    """Versions a user needs to know to run (or reproduce) the file."""
    def version(name: str) -> str | None:
        try:
            return importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            return None

    return {"python": platform.python_version(), "platform": sys.platform,
            "aistudio_export": __version__,
            **{pkg: version(pkg) for pkg in ("torch", "torchvision", "onnx", "onnxruntime", "onnxsim")},
            "opset": info.get("opset"), "ir_version": info.get("ir_version")}
