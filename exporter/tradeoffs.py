"""Every export of one experiment side by side: size, validation, accuracy change, speed, memory — the
rows of the Compare page, ``export-all``'s table and ``make bench``'s, and the Pareto front.

Speed comes from each export's latest benchmark on this machine (else on another, flagged); the
accuracy change from its evaluation — or, when the benchmark found the deployed runtime computing
at another precision, from the evaluation at that precision, so a speed is never paired with an
accuracy measured some other way.
"""

from __future__ import annotations

import statistics
from typing import Any

from exporter.record import ExportRecord
from exporter.verdict import resolved


def compare_rows(records: list[ExportRecord], machine_id: str | None = None) -> list[dict[str, Any]]:
    """One row per export, newest first as given; figures are ``None`` where not measured."""
    from exporter.formats import get_format
    from exporter.machine import this_machine_id

    here = machine_id or this_machine_id()
    rows = []
    for record in records:
        fmt = get_format(record.format, require_available=False)
        bench = record.benchmark
        evaluation = record.evaluation if record.evaluation and record.evaluation.status == "completed" else None
        runs_at = None
        metric, change, delta = (evaluation.primary_metric, -evaluation.drop,
                                 evaluation.delta.get(evaluation.primary_metric)) if evaluation else (None,) * 3
        check = (bench.deploy_check or {}) if bench else {}
        if check:
            runs_at = check.get("precision")
            deployed = check.get("evaluation") or {}
            if deployed.get("drop") is not None:
                change, delta = -deployed["drop"], (deployed.get("delta") or {}).get(metric)
        head = bench.headline() if bench else {}
        change, delta = (_resolved(change), _resolved(delta))  # float noise reads as no change, on every view
        rows.append({
            "id": record.id, "format": record.format, "display_format": fmt.display_name,
            "variant": fmt.variant_label(record.options), "status": record.status, "validation": record.verdict,
            "deploy_validation": (check.get("validation") or {}).get("verdict"), "runs_at": runs_at,
            "verdicts": record.verdict + (f" · at {runs_at}: {check['validation']['verdict']}" if runs_at else ""),
            "size_mb": record.output_size_mb, "metric": metric, "delta": delta, "change": change,
            "evaluation": evaluation.verdict if evaluation else None,
            "p50_ms": head.get("p50_ms"), "latency_batch": head.get("batch"),
            "throughput_ips": head.get("throughput_ips"), "throughput_batch": head.get("throughput_batch"),
            "peak_mb": head.get("peak_mb"), "speedup": head.get("speedup"),
            "other_machine": bool(bench and head["machine_id"] != here),
            "machine": (bench.machine.get("cpu") if bench else None),
            "benchmark_status": record.benchmarks[-1].status if record.benchmarks else None,
            "created_at": record.created_at, "checkpoint": record.checkpoint,
        })
    return rows


def _resolved(value: float | None) -> float | None:
    return None if value is None else value if resolved(value) else 0.0


def job_rows(records: list[ExportRecord]) -> list[dict[str, Any]]:
    """Export-all's live list: per export its format, precision, where it is (stage and progress, or its verdict),
    its benchmark's state, and a failure's one-line reason as soon as it happens."""
    from exporter.formats import get_format

    rows = []
    for record in records:
        fmt = get_format(record.format, require_available=False)
        bench = record.benchmarks[-1] if record.benchmarks else None
        if record.status == "pending":
            state = "queued"
        elif record.status == "running":
            state = f"{record.progress.stage} {record.progress.fraction:.0%}"
        else:
            state = record.verdict
        failure = None
        if record.error:
            failure = record.error.message
        elif record.status == "completed" and record.verdict == "failed":
            failure = record.decide().reason
        elif bench and bench.status == "failed" and bench.error:
            failure = f"benchmark: {bench.error.message}"
        rows.append({"id": record.id, "format": fmt.display_name, "variant": fmt.variant_label(record.options),
                     "state": state, "benchmark": bench.status if bench else "—",
                     "done": not record.active and not (bench and bench.status in ("queued", "running")),
                     "failure": failure.splitlines()[0][:200] if failure else None})
    return rows


def pytorch_baseline(records: list[ExportRecord]) -> dict[str, Any] | None:
    """PyTorch eager's figures, the median over the benchmarks of these exports on this machine (every
    benchmark measures it again beside its file)."""
    from exporter.machine import this_machine_id

    benches = [r.benchmark for r in records if r.benchmark and r.benchmark.machine.get("id") == this_machine_id()]
    p50 = [b.figure("pytorch", b.batch_sizes[0], "p50_ms") for b in benches if b.batch_sizes]
    throughput = [b.figure("pytorch", None, "throughput_ips") for b in benches]
    peak = [(b.results.get("pytorch") or {}).get("peak_rss_growth_mb") for b in benches]
    p50, throughput, peak = ([v for v in values if v is not None] for values in (p50, throughput, peak))
    if not p50:
        return None
    return {"p50_ms": statistics.median(p50), "throughput_ips": statistics.median(throughput) if throughput else None,
            "peak_mb": statistics.median(peak) if peak else None, "runs": len(p50)}


def pareto_front(rows: list[dict[str, Any]]) -> list[str]:
    """Ids of the passed rows (their one verdict, at the precision they run at) no other passed row beats on both
    latency (lower) and accuracy change (higher), by latency: a failed file is never a choice."""
    points = [r for r in rows if r.get("p50_ms") is not None and r.get("change") is not None
              and (r.get("deploy_validation") or r.get("validation")) == "passed"]
    front = [r for r in points
             if not any(o is not r and o["p50_ms"] <= r["p50_ms"] and o["change"] >= r["change"]
                        and (o["p50_ms"] < r["p50_ms"] or o["change"] > r["change"]) for o in points)]
    return [r["id"] for r in sorted(front, key=lambda r: r["p50_ms"])]


def fastest_within(rows: list[dict[str, Any]], max_drop: float) -> dict[str, Any] | None:
    """The lowest-latency row among those whose metric drops by at most ``max_drop`` and that validate at the
    precision they run at."""
    fit = [r for r in rows if r.get("p50_ms") is not None and r.get("change") is not None
           and -r["change"] <= max_drop + 1e-12 and (r.get("deploy_validation") or r.get("validation")) == "passed"]
    return min(fit, key=lambda r: r["p50_ms"], default=None)
