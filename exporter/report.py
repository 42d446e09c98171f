"""UI-free views of export records for the dashboard: staleness, run snippet, comparisons."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

from exporter.checkpoint import file_sha256

SMALL_FILE_BYTES = 100 * 1024 * 1024  # above this the dashboard links the streamed API download


@functools.lru_cache(maxsize=256)
def _cached_sha(path: str, mtime_ns: int, size: int) -> str:
    return file_sha256(path)


def checkpoint_sha256_now(path: str | os.PathLike[str]) -> str | None:
    """sha256 of a checkpoint as it is on disk now (cached by path, mtime and size)."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return _cached_sha(str(path), stat.st_mtime_ns, stat.st_size)


def is_stale(record: dict[str, Any]) -> bool:
    """True when the checkpoint an export came from has changed (or vanished) since."""
    recorded, path = record.get("checkpoint_sha256"), record.get("checkpoint_path")
    if not recorded or not path:
        return False
    return checkpoint_sha256_now(path) != recorded


def verdict(record: dict[str, Any]) -> str:
    """One word for a record: running, failed, cancelled, passed, inconclusive, ..."""
    if record.get("status") != "completed":
        return str(record.get("status"))
    return str((record.get("validation") or {}).get("verdict") or "unvalidated")


def usage_snippet(record: dict[str, Any]) -> str:
    """Copy-paste Python that runs the exported file with ONNX Runtime, preprocessing included."""
    model = record.get("model") or {}
    channels, height, width = (model.get("input_size") or [3, 224, 224])[:3]
    norm = model.get("normalization") or {"mean": [0.0] * channels, "std": [1.0] * channels}
    outputs = [o["name"] for o in model.get("outputs") or []]
    class_names = model.get("class_names") or []
    lines = [
        "import numpy as np",
        "import onnxruntime as ort",
        "from PIL import Image",
        "",
        f'session = ort.InferenceSession("{record.get("output_file") or "model.onnx"}", '
        'providers=["CPUExecutionProvider"])',
        f'image = Image.open("image.png").convert("{"RGB" if channels == 3 else "L"}")'
        f".resize(({width}, {height}))",
        "x = np.asarray(image, dtype=np.float32).reshape("
        f"{height}, {width}, {channels}).transpose(2, 0, 1) / 255.0",
        f"mean = np.array({norm['mean']}, dtype=np.float32).reshape(-1, 1, 1)",
        f"std = np.array({norm['std']}, dtype=np.float32).reshape(-1, 1, 1)",
        "x = ((x - mean) / std)[None]  # [1, C, H, W]",
        f"{', '.join(outputs) or 'outputs'}{',' if len(outputs) == 1 else ''} = "
        'session.run(None, {"input": x})',
    ]
    if model.get("task") == "classification" and outputs:
        lines.append(f"class_names = {json.dumps(class_names)}" if class_names else "")
        pick = "class_names[top]" if class_names else "top"
        lines += [f"top = int({outputs[0]}[0].argmax())", f"print({pick}, {outputs[0]}[0][top])"]
    elif "num_detections" in outputs:
        rotated = model.get("task") == "oriented_object_detection"
        box = "(cx, cy, w, h, angle in radians)" if rotated else "(x1, y1, x2, y2)"
        lines += [f"class_names = {json.dumps(class_names)}",
                  "n = int(num_detections[0])  # outputs are padded to max_detections",
                  "for box, score, label in zip(boxes[0][:n], scores[0][:n], labels[0][:n]):",
                  f"    print(class_names[label], round(float(score), 3), box.round(1))  # box {box}"]
    elif model.get("task") == "segmentation" and outputs:
        pick = "mask[0]" if outputs[0] == "mask" else "logits[0].argmax(0)"
        lines += [f"classes = {pick}  # [H, W] class id per pixel"]
    return "\n".join(line for line in lines if line is not None)


def filter_exports(entries: list[dict[str, Any]], *, projects: list[str] | None = None,
                   formats: list[str] | None = None, statuses: list[str] | None = None,
                   verdicts: list[str] | None = None, search: str = "") -> list[dict[str, Any]]:
    """Index entries matching every given filter (empty filter = no restriction)."""
    def keep(entry: dict[str, Any]) -> bool:
        word = ((entry.get("validation") or {}).get("verdict")) or "—"
        return ((not projects or entry.get("project_id") in projects)
                and (not formats or entry.get("format") in formats)
                and (not statuses or entry.get("status") in statuses)
                and (not verdicts or word in verdicts)
                and search.lower() in str(entry.get("experiment_id", "")).lower())

    return [e for e in entries if keep(e)]


def comparison_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (output, metric) with a column per export: for side-by-side comparison."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for record in records:
        validation = record.get("validation") or {}
        for out in validation.get("outputs", []):
            for metric in ("max_abs_diff", "mean_abs_diff", "max_rel_diff", "allowed_abs_diff", "passed"):
                row = rows.setdefault((out["name"], metric), {"output": out["name"], "metric": metric})
                row[record["id"]] = out.get(metric)
        for key, value in {"verdict": validation.get("verdict"), "batch_sizes": str(validation.get("batch_sizes")),
                           "opset": (record.get("model") or {}).get("opset"),
                           "size_mb": record.get("output_size_mb"), **validation.get("task_metrics", {})}.items():
            row = rows.setdefault(("(export)", key), {"output": "(export)", "metric": key})
            row[record["id"]] = value
    return list(rows.values())


def download_kind(record: dict[str, Any]) -> str:
    """``button`` for one small file, ``link`` (streamed API) for large or multi-file exports."""
    files = record.get("files") or []
    small = len(files) == 1 and files[0].get("size_bytes", 0) <= SMALL_FILE_BYTES
    return "button" if small else "link"


def primary_file(record: dict[str, Any], exports_dir: Path) -> Path:
    """Path of an export's main file."""
    return exports_dir / record["id"] / str(record.get("output_file"))
