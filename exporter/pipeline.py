"""The export pipeline: load, build, export, validate and publish one prepared export.

``run_export`` runs a ``pending`` record to the end in this process (a worker's job), updating
its progress, and always ends it ``completed`` or ``failed`` with a typed error.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from exporter.environment import environment
from exporter.errors import ExportError, InvalidOptionError, one_line, resource_error
from exporter.formats import get_format
from exporter.jobs.slots import process_identity, worker_slot
from exporter.passport import GOLDEN_DIR, golden_inputs, write_golden
from exporter.record import ExportRecord
from exporter.store import PARTIAL_DIR, ExportStore, utc_now
from exporter.tasks import get_task, task_option_specs
from exporter.version import __version__
from exporter.workspace import Workspace


def run_export(workspace: Workspace, project_id: str, export_id: str,
               on_progress: Callable[[ExportRecord], None] | None = None) -> ExportRecord:
    """Run a prepared export to the end and return its final record (never raises ExportError)."""
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


def stage_fractions(format_stages: tuple[str, ...]) -> dict[str, float]:
    """Progress fraction at the start of each stage: the format's own stages share 0.3–0.7."""
    step = 0.4 / max(1, len(format_stages))
    middle = {stage: round(0.3 + i * step, 3) for i, stage in enumerate(format_stages)}
    return {"load": 0.05, "build": 0.15, **middle, "validate": 0.7, "evaluate": 0.75, "refine": 0.8,
            "compare": 0.85, "diagnose": 0.9, "store": 0.95, "done": 1.0}



class _Pipeline:
    """The stages of one export; keeps the record's progress and timings current."""

    def __init__(self, workspace: Workspace, store: ExportStore, record: ExportRecord,
                 workdir: Path, on_progress: Callable[[ExportRecord], None] | None) -> None:
        self.workspace, self.store, self.record, self.workdir = workspace, store, record, workdir
        self.on_progress = on_progress
        self.stage = "load"
        self.fractions = stage_fractions(get_format(record.format, require_available=False).stages)
        self.timings: dict[str, float] = {}
        self._clock = time.perf_counter()

    def enter(self, stage: str) -> None:
        """Close the current stage's timer and announce ``stage``."""
        if stage == self.stage:
            return
        now = time.perf_counter()
        self.timings[self.stage] = round(self.timings.get(self.stage, 0.0) + now - self._clock, 4)
        if stage not in self.fractions:  # a format reporting a stage it does not declare
            raise ValueError(f"undeclared progress stage {stage!r}; declare it in the format's stages")
        self.stage, self._clock = stage, now
        self._save(progress={"stage": stage, "fraction": self.fractions[stage]}, timings_s=self.timings)

    def run(self) -> ExportRecord:
        from exporter.checkpoint import load_checkpoint

        project = self.store.project
        experiment = project.experiment(self.record.experiment_id)
        ref = experiment.checkpoint(self.record.checkpoint)
        fmt = get_format(self.record.format)
        options = self.record.options
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
        check = _Check(job, fmt, pool, pool_kind, len(samples), sha256, self.workspace.root, project.path,
                       self.store.export_dir(self.record.id))
        if artifact.runner is None:  # no runtime here can run it: say so, never "passed"
            from exporter.validation import unverified_report

            report = unverified_report(artifact.unverified, artifact.checks, fmt.default_tolerance(options))
            evaluation = None
        else:
            report, evaluation = check(artifact.runner, on_evaluate=self._entering_evaluate)
        search = diagnosis = None
        if options.get("accuracy") == "auto":
            self.enter("refine")
            artifact, report, evaluation, search = self._keep_accuracy(fmt, check, artifact, report, evaluation)
        yardstick = self._yardstick(spec, job, fmt, artifact, pool) if artifact.runner is not None else None
        if report.verdict == "failed" or (evaluation or {}).get("verdict") == "failed":
            self.enter("diagnose")  # say where it diverges, while the reference graph is at hand
            diagnosis = _diagnosis(fmt, job, artifact.files[0], pool, self.workdir)
        self.enter("store")
        golden = self.workdir / GOLDEN_DIR  # a few inputs and the file's answers, for verify --rerun and bundles
        write_golden(golden, *check.golden.get(id(artifact.runner), (check.golden_inputs(), None)))
        files = _publish(artifact.files, self.store.export_dir(self.record.id), beside=[golden])
        self.enter("done")
        timings = {k: v for k, v in self.timings.items() if k != "done"}
        return self._save(
            status="completed", finished_at=utc_now(), progress={"stage": "done", "fraction": 1.0},
            output_file=files[0]["name"], files=files,
            output_size_mb=round(sum(f["size_bytes"] for f in files) / 1e6, 3),
            model={**spec.metadata(), **artifact.info, "input_shape": list(shape)},
            validation=report.to_dict(), evaluation=evaluation, warnings=artifact.warnings, timings_s=timings,
            accuracy_search=search, diagnosis=diagnosis, yardstick=yardstick, environment=environment(artifact.info),
            error=None)

    def _yardstick(self, spec: Any, job: Any, fmt: Any, artifact: Any, pool: Any) -> dict[str, Any] | None:
        """The model's library's own exporter beside the file, where it has one (``Family.yardstick``)."""
        from exporter.families import owner

        family = owner(spec.architecture)
        method = fmt.library_exporters.get(family.library) if family else None
        if not method:
            return None
        self.enter("compare")
        return family.yardstick(job.module, method, list(artifact.files), pool, self.workdir)

    def _entering_evaluate(self) -> None:
        self.enter("evaluate")

    def _keep_accuracy(self, fmt: Any, check: _Check, artifact: Any, report: Any, evaluation: dict | None):
        """accuracy=auto: while the gate fails, keep more of the graph in float and convert again — first the
        segments the diagnosis ranks worst (a quarter of them, then all), then instead every op without weights
        (the box and score arithmetic a tensor-by-tensor diagnosis cannot follow past NMS, where shapes
        depend on the data). Ends with the first round that holds, else the best one reached.

        Returns ``(artifact, report, evaluation, search)``; ``search`` is the stored table of rounds.
        """
        from exporter.diagnosis import ranking, weight_free_nodes
        from exporter.formats import REFERENCE_FILE

        started = time.perf_counter()
        reference = self.workdir / REFERENCE_FILE
        inputs = _diagnosis_inputs(check.job, check.pool)
        rounds = [_round(0, (), False, "everything converted", report, evaluation, artifact)]
        keep: tuple[str, ...] = ()
        ranked: list[tuple[str, ...]] = []
        plans = iter([("the diagnosis's worst quarter", lambda: ranked[:max(1, len(ranked) // 4)], False),
                      ("everything the diagnosis ranks", lambda: ranked, False),
                      ("every op without weights", lambda: [(n,) for n in weight_free_nodes(reference)], True)])
        while not _gate(report, evaluation) and len(rounds) <= MAX_ACCURACY_ROUNDS:
            ranked = ranked or ranking(reference, artifact.files[0], inputs)  # of the fully converted file
            plan = next(((how, nodes, by_type) for how, pick, by_type in plans if (nodes := _nodes(pick())) != keep),
                        None)
            if plan is None:
                break
            how, keep, weight_free = plan
            artifact = fmt.reduce(check.job, self.workdir, keep, weight_free)
            report, evaluation = check(artifact.runner)
            rounds.append(_round(len(rounds), keep, weight_free, how, report, evaluation, artifact))
            self._save(progress={"stage": "refine", "fraction": round(0.8 + 0.02 * len(rounds), 3)})
        chosen = next((r for r in rounds if r["holds"]), max(rounds, key=round_score))
        if chosen is not rounds[-1]:  # the best round was an earlier one: make its file again
            artifact = fmt.reduce(check.job, self.workdir, tuple(chosen["kept_float"]), chosen["weight_free"])
            report, evaluation = check(artifact.runner)
        search = {"met": chosen["holds"], "chosen": chosen["round"], "max_rounds": MAX_ACCURACY_ROUNDS,
                  "gate": _gate_text(evaluation), "rounds": rounds,
                  "float_size_mb": round(reference.stat().st_size / 1e6, 3),
                  "duration_s": round(time.perf_counter() - started, 2)}
        return artifact, report, evaluation, search

    def fail(self, exc: ExportError) -> ExportRecord:
        """End the record ``failed`` with the error; no model file is left behind."""
        error = exc.to_dict()
        error["stage"] = error.get("stage") or self.stage
        self.store.clear_outputs(self.record.id)
        return self._save(status="failed", finished_at=utc_now(), error=error,
                          progress={"stage": self.stage, "fraction": 1.0})

    def _save(self, **changes: Any) -> ExportRecord:
        self.record = self.store.update(self.record.id, **changes)
        if self.on_progress:
            self.on_progress(self.record)
        return self.record


def recheck(workspace: Workspace, store: ExportStore, record: ExportRecord, runner: Any, *, tolerance: float,
            min_agreement: float | None, runtime: str) -> tuple[Any, dict[str, Any] | None]:
    """Validate another runner of an export's file (e.g. as deployed, at another precision) the way the
    export validated it, and evaluate it when the export was evaluated; returns ``(report, evaluation)``."""
    from exporter import evaluation

    project = store.project
    job, pool, pool_kind, samples = _rebuilt_job(store, record)
    report = _validate(job, runner, pool, pool_kind, get_format(record.format), len(samples),
                       tolerance=tolerance, min_agreement=min_agreement)
    evaluated = record.evaluation is not None and evaluation.val_folder(project.path).is_dir()
    return report, (_evaluate(job, runner, runtime, job.metadata["checkpoint_sha256"], workspace.root,
                              project.path, None) if evaluated else None)


def _rebuilt_job(store: ExportStore, record: ExportRecord):
    """An export's job made again from its checkpoint and options: ``(job, pool, pool_kind, samples)``."""
    from exporter.checkpoint import load_checkpoint

    project = store.project
    experiment = project.experiment(record.experiment_id)
    ckpt = load_checkpoint(experiment.checkpoint(record.checkpoint).path)
    spec, module, shape = _build(ckpt, experiment, project.task, record.options)
    samples = project.sample_images()
    pool, pool_kind = _input_pool(samples, shape, spec, record.options)
    return _job(module, spec, shape, record.options, record, ckpt.sha256, pool), pool, pool_kind, samples


class _Check:
    """Validation, then evaluation on ``data/val`` when the project has it and the options ask: the gate
    an export (and each round of accuracy=auto) must pass. Closes the runner it is given."""

    def __init__(self, job: Any, fmt: Any, pool: Any, pool_kind: str, n_samples: int, sha256: str,
                 cache_root: Path, project_path: Path, export_dir: Path) -> None:
        from exporter import evaluation

        self.job, self.fmt, self.pool, self.pool_kind, self.n_samples = job, fmt, pool, pool_kind, n_samples
        self.sha256, self.cache_root, self.project_path = sha256, cache_root, project_path
        self.gallery = export_dir / evaluation.GALLERY_DIR
        self.evaluates = bool(job.options.get("evaluate")) and evaluation.val_folder(project_path).is_dir()
        self.golden: dict[int, tuple[Any, list[Any]]] = {}  # by id(runner): the golden inputs and its answers

    def golden_inputs(self) -> Any:
        return golden_inputs(self.pool, None if self.job.dynamic_batch else self.job.input_shape[0])

    def __call__(self, runner: Any, on_evaluate: Callable[[], None] | None = None) -> tuple[Any, dict | None]:
        try:
            x = self.golden_inputs()
            self.golden[id(runner)] = (x, runner.run({self.job.input_names[0]: x}))
            report = _validate(self.job, runner, self.pool, self.pool_kind, self.fmt, self.n_samples)
            if not self.evaluates:
                return report, None
            if on_evaluate:
                on_evaluate()
            return report, _evaluate(self.job, runner, self.fmt.name, self.sha256, self.cache_root,
                                     self.project_path, self.gallery)
        finally:
            runner.close()


MAX_ACCURACY_ROUNDS = 3  # accuracy=auto converts again at most this many times


def _evaluated(evaluation: dict[str, Any] | None) -> bool:
    return evaluation is not None and evaluation.get("status", "completed") == "completed"


def _gate(report: Any, evaluation: dict[str, Any] | None) -> bool:
    """accuracy=auto's gate: the metric drop within ``max_metric_drop`` on data/val when the export is
    evaluated, else validation passing on the samples (task agreement ≥ 99 %)."""
    if evaluation is not None and not _evaluated(evaluation):  # evaluated, but it could not score the file
        return False
    return evaluation.get("verdict") == "passed" if _evaluated(evaluation) else report.verdict == "passed"


def _gate_text(evaluation: dict[str, Any] | None) -> str:
    if _evaluated(evaluation):
        return f"{evaluation.get('primary_metric')} drops by at most {evaluation.get('max_metric_drop')} on data/val"
    return "validation passes on the samples (task agreement ≥ 99 %)"


def round_score(row: dict[str, Any]) -> float:
    """What ranks accuracy=auto's rounds (higher is better): minus the metric drop, else the task agreement; a round
    whose evaluation broke ranks last."""
    return float("-inf") if row["score"] is None else row["score"]


def _nodes(segments: list[tuple[str, ...]]) -> tuple[str, ...]:
    """The nodes of ``segments``, each once, in order."""
    return tuple(dict.fromkeys(node for segment in segments for node in segment))


def _round(number: int, keep: tuple[str, ...], weight_free: bool, how: str, report: Any,
           evaluation: dict[str, Any] | None, artifact: Any) -> dict[str, Any]:
    """One round of accuracy=auto, as stored: what stayed in float, the gate's figures, the file's size."""
    from exporter.validation import AGREEMENT_METRICS

    agreement = next((report.task_metrics[k] for k in AGREEMENT_METRICS if k in report.task_metrics), None)
    evaluated = _evaluated(evaluation)
    drop = evaluation.get("drop") if evaluated else None
    metric = (evaluation.get("file") or {}).get(evaluation.get("primary_metric")) if evaluated else None
    score = -drop if drop is not None else (agreement if agreement is not None else -report.max_diff)
    if evaluation is not None and not evaluated:  # the evaluation broke on this round's file: never the best one
        score = None
    return {"round": number, "kept_float": list(keep), "kept_count": len(keep), "added": how,
            "weight_free": weight_free, "verdict": report.verdict, "agreement": agreement, "metric": metric,
            "drop": drop, "holds": _gate(report, evaluation),
            "size_mb": round(sum(f.stat().st_size for f in artifact.files) / 1e6, 3), "score": score}


def _diagnosis_inputs(job: Any, pool: Any) -> dict[str, Any]:
    """The images a diagnosis runs: the first two of the pool (the fixed batch when the batch is fixed)."""
    count = 2 if job.dynamic_batch else job.input_shape[0]
    batch = pool[:count]
    if len(batch) < count:
        batch = batch.repeat((count + len(batch) - 1) // len(batch), 1, 1, 1)[:count]
    return {job.input_names[0]: batch.numpy().astype("float32")}


def _diagnosis(fmt: Any, job: Any, path: Path, pool: Any, workdir: Path) -> dict[str, Any]:
    """Diagnose ``path`` against the fp32 graph the format left in ``workdir`` (or PyTorch); a failed diagnosis is
    reported, not raised: the export stands either way."""
    from exporter.diagnosis import diagnose_file
    from exporter.formats import REFERENCE_FILE

    reference = workdir / REFERENCE_FILE if (workdir / REFERENCE_FILE).is_file() else None
    try:
        return diagnose_file(fmt, job.options, path, job.module, _diagnosis_inputs(job, pool), reference)
    except Exception as exc:  # noqa: BLE001 - say why the diagnosis broke
        error = resource_error(exc, "diagnose") or ExportError(f"Internal error: {one_line(exc)}", stage="diagnose")
        return {"status": "failed", "error": error.to_dict()}


def diagnose(workspace: Workspace, store: ExportStore, record: ExportRecord) -> dict[str, Any]:
    """The diagnosis of a completed export's file, as stored in ``diagnosis`` (the caller stores it); a
    reduced-precision ONNX file or an OpenVINO IR is compared with the fp32 ONNX graph, exported again here
    from the checkpoint with the export's options."""
    import tempfile

    from exporter.diagnosis import diagnose_file
    from exporter.formats import float_graph

    job, pool, _, _ = _rebuilt_job(store, record)
    module = job.module
    fmt = get_format(record.format, require_available=False)
    path = store.export_dir(record.id) / str(record.output_file)
    if not fmt.diagnosed_against_float_graph(record.options):
        return diagnose_file(fmt, job.options, path, module, _diagnosis_inputs(job, pool), None)
    with tempfile.TemporaryDirectory(prefix="aistudio-reference-") as tmp:  # the fp32 graph, made again
        same = {k: record.options[k] for k in ("opset_version", "exporter", "simplify") if k in record.options}
        reference = float_graph(job, Path(tmp), lambda _: None, **same)
        reference.runner.close()
        return diagnose_file(fmt, job.options, path, module, _diagnosis_inputs(job, pool), reference.files[0])


def _evaluate(job: Any, runner: Any, runtime: str, sha256: str, cache_root: Path, project_path: Path,
              gallery: Path | None) -> dict[str, Any]:
    """Evaluate a runner on the project's labelled set; a broken set is reported, not raised (the file
    is exported and validated either way)."""
    from exporter import evaluation

    try:
        inputs = evaluation.prepare(get_task(job.spec.task), job.spec, job.options, project_path, job.input_shape)
        return evaluation.evaluate(inputs, job.module, runner, input_name=job.input_names[0],
                                   output_names=job.output_names, checkpoint_sha256=sha256, cache_root=cache_root,
                                   runtime=runtime, gallery=gallery)
    except ExportError as exc:
        return {"status": "failed", "error": {**exc.to_dict(), "stage": "evaluate"}}
    except Exception as exc:  # noqa: BLE001 - say why evaluation broke
        error = resource_error(exc, "evaluate") or ExportError(f"Internal error: {one_line(exc)}", stage="evaluate")
        return {"status": "failed", "error": error.to_dict()}


def build_wrapped(ckpt: Any, experiment: Any, project_task: str | None = None,
                  options: dict[str, Any] | None = None):
    """The checkpoint's model with its weights, wrapped for export (eval mode, clean outputs).

    Returns:
        ``(spec, module)``.

    Raises:
        ArchitectureError / StateDictMismatchError: no builder, or the weights do not fit.
    """
    return build_from(ckpt.hyper_parameters, experiment.model, ckpt.state_dict,
                      task_hint=experiment.task or project_task, options=options)


def build_from(hyper_parameters: dict[str, Any], model_meta: dict[str, Any], state_dict: dict[str, Any],
               task_hint: str | None = None, options: dict[str, Any] | None = None):
    """``(spec, module)`` from a model description and weights: the one build path of exports and imports.

    Raises:
        ArchitectureError / StateDictMismatchError: no builder, or the weights do not fit.
    """
    import dataclasses

    from exporter.checkpoint import load_weights, weights_to_come
    from exporter.families import owner
    from exporter.models import ModelSpec

    spec = ModelSpec.resolve(hyper_parameters, model_meta, task_hint=task_hint)
    task = get_task(spec.task)
    family = owner(spec.architecture)  # transformers / smp models: their family builds and wraps them
    if family:
        model = family.build(spec)
        family.load(model, state_dict)  # anomalib sizes buffers first
    else:
        with weights_to_come():
            model = task.build(spec)
        load_weights(model, state_dict)
    if task.input_normalization is not None:  # the graph normalises: it takes images in [0, 1]
        spec = dataclasses.replace(spec, normalization=dict(task.input_normalization))
    return spec, (family.wrap(model.eval(), spec, options or {}) if family else task.wrap(model.eval(), spec, options))


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


def _job(module: Any, spec: Any, shape: tuple, options: dict[str, Any], record: ExportRecord,
         sha256: str, pool: Any):
    import json

    from exporter.formats import ExportJob
    adapter = get_task(spec.task)
    meta = {
        "task": spec.task, "architecture": spec.architecture,
        "class_names": json.dumps(list(spec.class_names)),
        "normalization": json.dumps(spec.normalization), "input_size": json.dumps(list(spec.input_size)),
        "num_classes": str(spec.num_classes), "checkpoint_sha256": sha256,
        "checkpoint": record.checkpoint, "project_id": record.project_id,
        "experiment_id": record.experiment_id, "export_id": record.id,
        "exporter_version": f"aistudio-export {__version__}",
    }
    job = ExportJob(module=module, spec=spec, input_shape=shape,  # type: ignore[arg-type]
                    dynamic_batch=options["dynamic_batch"], input_names=adapter.input_names,
                    output_names=adapter.outputs(options), options=options, metadata=meta,
                    calibration=pool.numpy())
    if code_sha := spec.metadata().get("code_sha256"):
        meta["model_code_sha256"] = code_sha
    settings = task_settings(job)
    if settings:  # e.g. score/IoU thresholds and max_detections baked into the graph
        meta["postprocess"] = json.dumps(settings)
    return job


def _input_pool(samples: list[Path], shape: tuple, spec: Any, options: dict[str, Any]):
    from exporter.validation import input_pool

    return input_pool(samples, tuple(shape[1:]), spec.normalization,
                      extra_random=max(0, options.get("calibration_samples", 0) - len(samples)))


def _validate(job: Any, runner: Any, pool: Any, pool_kind: str, fmt: Any, n_samples: int,
              tolerance: float | None = None, min_agreement: float | None = None):
    """Validate at batch 1 and 2 (or the fixed batch); ``tolerance``/``min_agreement`` default to the
    format's for the export's options."""
    from exporter.validation import MAX_SAMPLE_IMAGES, VALIDATION_IMAGES, validate

    options = job.options
    sizes = [1, 2] if job.dynamic_batch else [job.input_shape[0]]
    task = job.spec.task
    factor = get_task(task).traits.tolerance_factor
    tolerance = options["tolerance"] or (tolerance or fmt.default_tolerance(options)) * factor
    return validate(job.module, runner, input_name=job.input_names[0], output_names=job.output_names,
                    pool=pool[:VALIDATION_IMAGES], pool_kind=pool_kind, batch_sizes=sizes, tolerance=tolerance,
                    task=task, min_agreement=min_agreement or fmt.min_agreement(options),
                    n_samples=min(n_samples, MAX_SAMPLE_IMAGES), settings=task_settings(job))


def task_settings(job: Any) -> dict[str, Any]:
    """Task options with the thresholds the wrapped model actually applies (model defaults filled in)."""
    settings = {spec.name: job.options.get(spec.name) for spec in task_option_specs(job.spec.task)}
    for name in ("score_threshold", "iou_threshold", "max_detections"):
        if hasattr(job.module, name):
            settings[name] = getattr(job.module, name)
    return settings


def _publish(files: list[Path], folder: Path, beside: list[Path] = ()) -> list[dict[str, Any]]:
    """Move finished files into the export folder, primary file last, with their sha256 (``beside``: folders that
    go with them, first)."""
    from exporter.checkpoint import file_sha256
    from exporter.errors import OutputFileError

    rows = [{"name": p.name, "size_bytes": p.stat().st_size, "sha256": file_sha256(p)} for p in files]
    try:
        for extra in beside:
            if extra.exists():
                shutil.rmtree(folder / extra.name, ignore_errors=True)
                os.replace(extra, folder / extra.name)
        for path in reversed(files):  # data files first: model.onnx appears only once complete
            os.replace(path, folder / path.name)
    except OSError as exc:
        raise OutputFileError(f"Could not move the exported file into place: {exc}", stage="store") from None
    return rows
