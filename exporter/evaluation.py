"""Accuracy on the project's labelled validation set: PyTorch and the exported file, each in its own
runtime, on the same preprocessed batches; both scored with the task's metrics; the primary metric's
drop gated by ``max_metric_drop``; the images where the two disagree most listed.

PyTorch's predictions are cached per (checkpoint sha256, dataset digest, task options, input shape),
so evaluating several exports of one checkpoint runs PyTorch once.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from exporter.datasets import ValSet, digest
from exporter.errors import DatasetError

if TYPE_CHECKING:
    from exporter.formats.registry import Runner
    from exporter.models.spec import ModelSpec
    from exporter.tasks.base import Task

VAL_DIR = Path("data") / "val"
BATCH = 8
MIN_IMAGES = 20  # fewer labelled images than this: the verdict is inconclusive
MAX_DISAGREEMENTS = 24
THUMBNAIL = 192  # longest side of each half of a gallery picture, in pixels
GALLERY_DIR = "gallery"
CACHE_DIR = ".cache/evaluation"
Predictions = list[dict[str, np.ndarray]]


@dataclass(frozen=True)
class EvalInputs:
    """What one evaluation runs on: the task, the model's spec and options, the set, its digest."""

    task: Task
    spec: ModelSpec
    options: dict[str, Any]
    valset: ValSet
    digest: str
    input_shape: tuple[int, ...]


def val_folder(project_path: Path) -> Path:
    """Where a project's labelled validation set lives."""
    return project_path / VAL_DIR


def require_val_folder(project_path: Path) -> Path:
    """The project's labelled set folder, or a ``DatasetError`` that says where to put one."""
    folder = val_folder(project_path)
    if not folder.is_dir():
        raise DatasetError(f"Project {project_path.name!r} has no labelled validation set: attach one with "
                           f"'python -m exporter data add --project {project_path.name} PATH' (or Projects → "
                           f"Attach a labelled validation set), in its task's layout (docs/evaluation.md).")
    return folder


def prepare(task: Task, spec: ModelSpec, options: dict[str, Any], project_path: Path,
            input_shape: tuple[int, ...]) -> EvalInputs:
    """Read and check the project's set (the first ``max_images`` images).

    Raises:
        DatasetError: no set, or one whose layout does not match the task's.
    """
    folder = require_val_folder(project_path)
    valset = task.read_val_set(folder, spec).subset(int(options.get("max_images") or 500))
    return EvalInputs(task, spec, options, valset, digest(folder), tuple(input_shape))


def evaluate(inputs: EvalInputs, module: Any, runner: Runner, *, input_name: str, output_names: tuple[str, ...],
             checkpoint_sha256: str, cache_root: Path, runtime: str, gallery: Path | None = None,
             progress: Callable[[float], None] = lambda _: None) -> dict[str, Any]:
    """Run both, score both, gate; returns the record's ``evaluation``.

    With ``gallery`` (a folder in the export's folder), the disagreements are drawn there as
    thumbnails and each entry names its ``thumbnail`` (relative to the export's folder).
    """
    started = time.perf_counter()
    key = _cache_key(inputs, checkpoint_sha256, output_names)
    reference, cached = _cached(cache_root, key)
    if reference is None:
        reference = _predict(inputs, lambda x: [t.numpy() for t in module(_torch(x))], output_names,
                             lambda f: progress(f / 2))
        _store(cache_root, key, reference)
    exported = _predict(inputs, lambda x: runner.run({input_name: x}), output_names,
                        lambda f: progress(0.5 + f / 2))
    _refuse_non_finite(inputs, reference, exported)
    result = summarize(inputs, reference, exported, cached=cached, runtime=runtime,
                       seconds=time.perf_counter() - started)
    if gallery is not None:
        write_gallery(inputs, reference, exported, result, gallery)
    return result


def _refuse_non_finite(inputs: EvalInputs, reference: Predictions, exported: Predictions) -> None:
    """A file that answers NaN or Inf where PyTorch does not cannot be scored, and must not pass.

    Raises:
        NonFiniteOutputError: naming how many labelled images and the first one.
    """
    from exporter.errors import NonFiniteOutputError

    def finite(prediction: dict[str, np.ndarray]) -> bool:
        return all(np.isfinite(np.asarray(v, dtype=np.float64)).all() for v in prediction.values())

    bad = [i for i, (r, e) in enumerate(zip(reference, exported, strict=True)) if finite(r) and not finite(e)]
    if bad:
        first = inputs.valset.images[bad[0]].relative_to(inputs.valset.folder)
        raise NonFiniteOutputError(
            f"The file answers NaN or Inf on {len(bad)} of {len(exported)} labelled images where PyTorch's answer is "
            f"finite (first: {first}); it cannot be used on your data as it is — diagnose it, or keep more of it in "
            "float (accuracy=auto, a higher precision).", stage="evaluate")


def summarize(inputs: EvalInputs, reference: Predictions, exported: Predictions, *, cached: bool, runtime: str,
              seconds: float) -> dict[str, Any]:
    """Metrics of both, the primary metric's drop, the verdict and the disagreements."""
    task, traits = inputs.task, inputs.task.traits
    calibration = task.calibrate(reference, inputs.valset, inputs.spec)
    ref_score = task.score(reference, inputs.valset, inputs.spec, calibration)
    file_score = task.score(exported, inputs.valset, inputs.spec, calibration)
    primary = traits.primary_metric
    sign = 1.0 if traits.higher_is_better else -1.0
    drop = sign * (ref_score.metrics[primary] - file_score.metrics[primary])
    limit = float(inputs.options.get("max_metric_drop") if inputs.options.get("max_metric_drop") is not None
                  else 0.01)
    verdict, reason = _verdict(inputs, ref_score.metrics, drop, limit)
    return {
        "status": "completed", "verdict": verdict, "reason": reason,
        "dataset": {"path": str(VAL_DIR), "digest": inputs.digest, "layout": inputs.valset.layout,
                    "images": len(inputs.valset.images)},
        "primary_metric": primary, "higher_is_better": traits.higher_is_better,
        "pytorch": ref_score.metrics, "file": file_score.metrics,
        "delta": {k: file_score.metrics[k] - v for k, v in ref_score.metrics.items() if k in file_score.metrics},
        "drop": drop, "max_metric_drop": limit, "calibration": calibration,
        "per_class": {"pytorch": ref_score.per_class, "file": file_score.per_class},
        "extra": {"pytorch": ref_score.extra, "file": file_score.extra},
        "disagreements": _disagreements(inputs, reference, exported, calibration),
        "runtime": runtime, "pytorch_cached": cached, "duration_s": round(seconds, 3),
    }


def _verdict(inputs: EvalInputs, reference: dict[str, float], drop: float, limit: float) -> tuple[str, str]:
    from exporter.verdict import change_text

    key = inputs.task.traits.primary_metric
    primary = inputs.task.traits.metric_name(key)
    if len(inputs.valset.images) < MIN_IMAGES:
        return "inconclusive", (f"only {len(inputs.valset.images)} labelled images (need ≥ {MIN_IMAGES}) — "
                                "too few to measure a drop")
    if inputs.task.at_chance(reference, inputs.spec):
        return "inconclusive", (f"PyTorch itself scores at chance ({primary} {reference[key]:.3g}), so a "
                                "drop means nothing; check the set's labels and class order")
    if drop > limit + 1e-12:
        return "failed", f"{primary} drops by {drop:.4g}, over max_metric_drop={limit:g}"
    change = change_text(-drop if inputs.task.traits.higher_is_better else drop)
    said = "unchanged" if change == "unchanged" else f"changes by {change}"
    return "passed", f"{primary} {said} (allowed drop {limit:g})"


def _torch(x: np.ndarray):
    import torch

    return torch.from_numpy(x)


def _predict(inputs: EvalInputs, run: Callable[[np.ndarray], list[np.ndarray]], output_names: tuple[str, ...],
             progress: Callable[[float], None]) -> Predictions:
    """Per-image predictions (``{output name: array}``) over the set, in batches of ``BATCH``."""
    import torch

    from exporter.validation import load_images

    images, predictions = inputs.valset.images, []
    batch = BATCH if inputs.options.get("dynamic_batch", True) else inputs.input_shape[0]
    with torch.no_grad():
        for start in range(0, len(images), batch):
            x = load_images(list(images[start:start + batch]), inputs.spec.input_size,
                            inputs.spec.normalization).numpy()
            predictions += inputs.task.split_outputs(dict(zip(output_names, run(x), strict=True)))
            progress(min(1.0, (start + batch) / len(images)))
    return predictions


def _disagreements(inputs: EvalInputs, reference: Predictions, exported: Predictions,
                   calibration: dict[str, float]) -> list[dict[str, Any]]:
    scores = [inputs.task.disagreement(r, e, calibration) for r, e in zip(reference, exported, strict=True)]
    ranked = sorted((i for i, s in enumerate(scores) if s > 0), key=lambda i: -scores[i])[:MAX_DISAGREEMENTS]
    folder = inputs.valset.folder
    return [{"image": str(inputs.valset.images[i].relative_to(folder)), "score": float(scores[i]), "index": i}
            for i in ranked]


def write_gallery(inputs: EvalInputs, reference: Predictions, exported: Predictions, result: dict[str, Any],
                  folder: Path) -> None:
    """Draw each disagreement (PyTorch's answer beside the file's) into ``folder``, replacing what was there
    (built aside, then renamed), and name the thumbnail in its entry."""
    import os
    import shutil
    import uuid

    tmp = folder.with_name(f".{folder.name}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    try:
        for n, entry in enumerate(result["disagreements"]):
            i = entry["index"]
            pair = _pair(inputs, inputs.valset.images[i], (reference[i], exported[i]),
                         ("PyTorch", f"exported ({result['runtime']})"), result["calibration"])
            pair.save(tmp / f"{n:02d}.png", optimize=True)
            entry["thumbnail"] = f"{folder.name}/{n:02d}.png"
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _pair(inputs: EvalInputs, image: Path, predictions: tuple[dict, dict], titles: tuple[str, str],
          calibration: dict[str, float]):
    """The image at the model's input size, drawn once per prediction, side by side under their titles."""
    from PIL import Image

    from exporter.tasks.drawing import side_by_side

    _, height, width = inputs.spec.input_size
    scale = THUMBNAIL / max(height, width)
    with Image.open(image) as img:
        base = img.convert("RGB").resize((width, height))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return side_by_side(inputs.task, inputs.spec, base, predictions, titles, calibration, size)


def _cache_key(inputs: EvalInputs, checkpoint_sha256: str, output_names: tuple[str, ...]) -> str:
    task_options = {s.name: inputs.options.get(s.name) for s in inputs.task.traits.options}
    text = json.dumps([checkpoint_sha256, inputs.digest, task_options, list(inputs.input_shape[1:]),
                       list(output_names), len(inputs.valset.images)], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _cached(root: Path, key: str) -> tuple[Predictions | None, bool]:
    path = root / CACHE_DIR / f"{key}.npz"
    try:
        with np.load(path) as data:
            count = int(data["__count__"])
            found: Predictions = [{} for _ in range(count)]
            for name in data.files:
                if name != "__count__":
                    index, output = name.split("/", 1)
                    found[int(index)][output] = data[name]
        return found, True
    except (OSError, ValueError, KeyError):
        return None, False


def _store(root: Path, key: str, predictions: Predictions) -> None:
    import os
    import uuid

    folder = root / CACHE_DIR
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{key}.{uuid.uuid4().hex[:6]}.npz"
        arrays = {f"{i}/{name}": value for i, p in enumerate(predictions) for name, value in p.items()}
        np.savez(tmp, __count__=np.array(len(predictions)), **arrays)
        os.replace(tmp, folder / f"{key}.npz")
    except OSError:
        pass  # a cache that cannot be written only costs time
