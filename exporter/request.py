"""An export request and its checks: everything cheap is checked before any work starts.

``prepare_export`` checks the ids, the format, its options and the task's, then writes the
``pending`` record a worker will run; a bad request writes nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter.errors import InvalidOptionError, UsageError
from exporter.families import needs as model_needs
from exporter.formats import DEFAULT_FORMAT, get_format
from exporter.record import ExportRecord
from exporter.store import ExportStore, utc_now
from exporter.tasks import task_option_specs, task_traits
from exporter.workspace import Workspace


@dataclass(frozen=True)
class ExportRequest:
    """What a user asks for: which checkpoint, which format, which options."""

    project_id: str
    experiment_id: str
    checkpoint: str = "best"
    format: str = DEFAULT_FORMAT
    options: dict[str, Any] = field(default_factory=dict)
    benchmark: dict[str, Any] | None = None  # settings of a benchmark to run once the export completes


def prepare_export(workspace: Workspace, request: ExportRequest,
                   check: Callable[[str, dict[str, Any], Path], None] | None = None) -> ExportRecord:
    """Check a request and write its ``pending`` record; ``check(format, options, checkpoint path)`` is the
    runner's own check (a Ray cluster refuses a job no node can ever run).

    Raises:
        NotFoundError: unknown project, experiment or checkpoint.
        UsageError: unknown/unavailable format or a bad option (nothing is written).
    """
    from exporter.benchmark import new_entry, parse_request
    from exporter.jobs.slots import check_target
    from exporter.options import parse_options

    project = workspace.project(request.project_id)
    experiment = project.experiment(request.experiment_id)
    ref = experiment.checkpoint(request.checkpoint)
    fmt = get_format(request.format)
    task = experiment.task or project.task
    check_target(request.options)
    options = parse_options(option_specs(fmt, task), request.options)
    _fixed_batch(experiment.model, request.options, options)
    fmt.check_options(options)
    if request.benchmark is not None and (why := fmt.runs_here()):
        raise UsageError(f"{fmt.display_name} files cannot run on this machine ({why}): export without a benchmark.")
    fmt.check_task(task, options, model_needs(task, experiment.model))
    check_task_options(task, options)
    check_accuracy_data(project, options)
    if check is not None:
        check(fmt.name, options, ref.path)
    benchmarks = [] if request.benchmark is None else [new_entry(parse_request(request.benchmark))]
    return ExportStore(project).create(
        project_id=project.id, experiment_id=experiment.id, checkpoint=ref.name, format=fmt.name,
        options=options, created_at=utc_now(), checkpoint_path=str(ref.path), worker={"pid": os.getpid()},
        model={"task": experiment.task, "architecture": experiment.model.get("architecture")}, benchmarks=benchmarks)


def option_specs(fmt: Any, task: str | None) -> tuple[Any, ...]:
    """Every option of an export: the format's (common ones first), the task's, then the runner's (``target``
    with the Ray runner)."""
    from exporter.jobs.slots import runner_options

    return tuple(fmt.options()) + task_option_specs(task) + runner_options()


def _fixed_batch(model: dict[str, Any], asked: dict[str, Any], options: dict[str, Any]) -> None:
    """A program exported with a fixed batch takes only that batch: files made from it too.

    Raises:
        InvalidOptionError: a dynamic batch or another batch size asked of it.
    """
    if not (fixed := model.get("fixed_batch")):
        return
    shape = [fixed, *model.get("input_size", [])]
    if asked.get("dynamic_batch") or (options.get("input_shape") and list(options["input_shape"])[:1] != [fixed]):
        raise InvalidOptionError(f"This program was exported for a batch of {fixed} only: leave dynamic_batch off "
                                 "and the batch as it is, or export it again with a dynamic batch "
                                 "(torch.export.export(..., dynamic_shapes=...)) and import that.")
    options["dynamic_batch"] = False
    options["input_shape"] = options.get("input_shape") or shape


def check_accuracy_data(project: Any, options: dict[str, Any]) -> None:
    """accuracy=auto needs real images to hold a gate on: the project's samples or its labelled set.

    Raises:
        InvalidOptionError: neither, with what to add.
    """
    from exporter.evaluation import val_folder

    if options.get("accuracy") == "auto" and not project.sample_images() and not val_folder(project.path).is_dir():
        raise InvalidOptionError(
            f"accuracy=auto needs images to check each round on, and project {project.id} has none: add sample "
            f"images to {project.path / 'data' / 'samples'} or attach a labelled set (python -m exporter data "
            f"add --project {project.id} PATH).")


def check_task_options(task: str | None, options: dict[str, Any]) -> None:
    """Reject an opset too old for the task's graph (e.g. NonMaxSuppression needs 11).

    Raises:
        InvalidOptionError: with the lowest opset that works.
    """
    traits = task_traits(task)
    opset = options.get("opset_version")
    if traits and opset is not None and opset < traits.min_opset:
        raise InvalidOptionError(
            f"{task} graphs need ONNX opset ≥ {traits.min_opset} ({traits.min_opset_ops}); "
            f"opset_version={opset} cannot hold them. Use opset_version={traits.min_opset} or higher.")
