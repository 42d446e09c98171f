"""UI-free views of export records for the dashboard: staleness, run snippet, comparisons."""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, Any

from exporter.checkpoint import file_sha256

if TYPE_CHECKING:
    from exporter.record import ExportRecord, ExportSummary


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


def is_stale(checkpoint_sha256: str | None, checkpoint_path: str | None) -> bool:
    """True when the checkpoint an export came from (its recorded sha256 and path, from a record or
    an index entry) has changed or vanished since."""
    if not checkpoint_sha256 or not checkpoint_path:
        return False
    return checkpoint_sha256_now(checkpoint_path) != checkpoint_sha256


def require_current(store: Any, record: ExportRecord, action: str) -> None:
    """Refuse, before any work, to ``action`` ("evaluate", "benchmark", "diagnose") an export that is not completed,
    whose files are gone, or whose checkpoint changed since (its PyTorch reference would be another model).

    Raises:
        UsageError / NotFoundError: with what to do.
    """
    from exporter.errors import NotFoundError, UsageError
    from exporter.formats import get_format

    if record.status != "completed":
        done = action.rstrip("e") + "ed"  # evaluated, benchmarked, diagnosed
        raise UsageError(f"Export {record.id} is {record.status}; only completed exports can be {done}.")
    folder = store.export_dir(record.id)
    if not record.files or not all((folder / f.name).is_file() for f in record.files):
        raise NotFoundError(f"The files of export {record.id} are gone; export the checkpoint again.")
    fmt = get_format(record.format, require_available=False)
    if (why := fmt.runs_here()) and action in ("evaluate", "benchmark"):
        raise UsageError(f"{fmt.display_name} files cannot run on this machine ({why}), so export {record.id} cannot "
                         f"be {action.rstrip('e')}ed here.")
    if is_stale(record.checkpoint_sha256, record.checkpoint_path):
        raise UsageError(f"The checkpoint of export {record.id} has changed since it was exported; export it "
                         f"again, then {action}.")


def usage_snippet(record: ExportRecord) -> str:
    """Copy-paste Python that runs the exported file in its own runtime, preprocessing included.

    The format says how to open and run its file; the preprocessing is the one validation used
    (resize, scale to [0, 1], the model's mean/std); the task says how to read the outputs.
    """
    from exporter.formats import get_format
    from exporter.tasks import get_task

    model = record.model.model_dump()
    channels, height, width = (model.get("input_size") or [3, 224, 224])[:3]
    norm = model.get("normalization") or {"mean": [0.0] * channels, "std": [1.0] * channels}
    outputs = [o["name"] for o in model["outputs"]]
    usage = get_format(record.format, require_available=False).usage(record.output_file or "model", model)
    lines = [
        "import numpy as np", *usage.imports, "from PIL import Image", "",
        *usage.load,
        f'image = Image.open("image.png").convert("{"RGB" if channels == 3 else "L"}")'
        f".resize(({width}, {height}), Image.BILINEAR)",
        "x = np.asarray(image, dtype=np.float32).reshape("
        f"{height}, {width}, {channels}).transpose(2, 0, 1) / 255.0",
        f"mean = np.array({norm['mean']}, dtype=np.float32).reshape(-1, 1, 1)",
        f"std = np.array({norm['std']}, dtype=np.float32).reshape(-1, 1, 1)",
        "x = np.ascontiguousarray(((x - mean) / std)[None], dtype=np.float32)  # [1, C, H, W]",
        *usage.run,
        f"{', '.join(outputs) or 'result'}{',' if len(outputs) == 1 else ''} = outputs",
        *(get_task(record.model.task).usage_lines(model, outputs) if record.model.task else []),
    ]
    return "\n".join(lines)


def filter_exports(entries: list[ExportSummary], *, projects: list[str] | None = None,
                   formats: list[str] | None = None, statuses: list[str] | None = None,
                   verdicts: list[str] | None = None, evaluations: list[str] | None = None,
                   search: str = "") -> list[ExportSummary]:
    """Export summaries matching every given filter (empty filter = no restriction)."""
    def keep(entry: ExportSummary) -> bool:
        return ((not projects or entry.project_id in projects)
                and (not formats or entry.format in formats)
                and (not statuses or entry.status in statuses)
                and (not verdicts or verdict_word(entry) in verdicts)
                and (not evaluations or evaluation_word(entry) in evaluations)
                and search.lower() in entry.experiment_id.lower())

    return [e for e in entries if keep(e)]


def verdict_word(entry: ExportSummary) -> str:
    """An export's one verdict (``exporter.verdict``): passed, failed, … — its status while not completed."""
    if entry.status != "completed":
        return entry.status
    return entry.verdict or entry.validation.verdict or "—"


def evaluation_word(entry: ExportSummary) -> str:
    """An export's evaluation in one word: passed, failed, inconclusive, running, error or —."""
    evaluation = entry.evaluation
    if evaluation is None:
        return "—"
    if evaluation.status == "failed":
        return "error"
    return str(evaluation.verdict or evaluation.status or "—")


def metric_delta(entry: ExportSummary) -> str:
    """``"top-1 accuracy unchanged"``, ``"mAP@.5 -0.0120"``: the primary metric's change from PyTorch to the file,
    its name in words ("" when not evaluated)."""
    from exporter.tasks import metric_label
    from exporter.verdict import change_text

    evaluation = entry.evaluation
    if evaluation is None or evaluation.delta is None:
        return ""
    return f"{metric_label(entry.task, str(evaluation.primary_metric))} {change_text(evaluation.delta)}"


def benchmark_p50(entry: ExportSummary) -> str:
    """The export's benchmark as a cell: p50 at the smallest batch, flagged when taken elsewhere."""
    from exporter.machine import this_machine_id

    bench = entry.benchmark
    if bench is None:
        return ""
    if bench.p50_ms is None:
        return {"queued": "queued", "running": "running", "failed": "failed"}.get(str(bench.status), "")
    elsewhere = " ⚠️ other machine" if bench.machine_id != this_machine_id() else ""
    return f"{bench.p50_ms:.2f} (b{bench.batch}){elsewhere}"


def comparison_rows(records: list[ExportRecord]) -> list[dict[str, Any]]:
    """One row per (output, metric) with a column per export, values as text (numbers to 4
    significant digits, "—" where an export has none): for side-by-side comparison."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for record in records:
        validation = record.validation
        for out in validation.outputs if validation else []:
            for metric in ("max_abs_diff", "mean_abs_diff", "max_rel_diff", "allowed_abs_diff", "passed"):
                row = rows.setdefault((out.name, metric), {"output": out.name, "metric": metric})
                row[record.id] = getattr(out, metric)
        evaluation = record.evaluation if record.evaluation and record.evaluation.status == "completed" else None
        facts = {"format": record.format, "precision": record.options.get("precision"),
                 "verdict": record.verdict, "batch_sizes": str(validation.batch_sizes) if validation else None,
                 "opset": record.model.opset, "size_mb": record.output_size_mb,
                 **(validation.task_metrics if validation else {}),
                 **({f"{evaluation.primary_metric} (file)": evaluation.file.get(evaluation.primary_metric),
                     "metric drop": evaluation.drop, "evaluation": evaluation.verdict} if evaluation else {}),
                 **_speed(record)}
        for key, value in facts.items():
            row = rows.setdefault(("(export)", key), {"output": "(export)", "metric": key})
            row[record.id] = value
    ids = [r.id for r in records]
    return [{**row, **{i: _shown(row.get(i)) for i in ids}} for row in rows.values()]


def _speed(record: ExportRecord) -> dict[str, Any]:
    bench = record.benchmark
    if bench is None:
        return {}
    head = bench.headline()
    return {f"p50 ms (batch {head['batch']})": head["p50_ms"],
            f"img/s (batch {head['throughput_batch']})": head["throughput_ips"],
            "× PyTorch eager": head["speedup"], "benchmarked on": bench.machine.get("cpu")}


def _shown(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def where_it_runs(worker: Any) -> str:
    """Where a job runs or ran, in words: a Ray node (host, address), or this machine."""
    if getattr(worker, "runner", None) == "ray":
        node = getattr(worker, "host", None)
        return f"Ray node {node} ({getattr(worker, 'node_ip', '?')})" if node else "Ray (waiting for a node)"
    return "this machine"
