"""Benchmarks: export + validation time per model, and server memory while streaming 1 GB each way.

    python -m bench.run [--quick]      (make bench)

Writes bench/results/latest.json and latest.md. Each timing is the median of repeated runs
with min and max; runs happen side by side in one process on this machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench import families, family_formats, ray_bench, rcnn_stages, scale, serving
from bench.scale import stats

RESULTS = Path(__file__).resolve().parent / "results"


def build_models(root: Path) -> None:
    """The demo workspace plus resnet50 and resnet18 @224 (1000 classes) as projects bench-resnet50/-resnet18."""
    from demo import build_demo
    from testkit.models import classifier_checkpoint

    build_demo(root)
    for architecture in ("resnet50", "resnet18"):
        if not (root / "projects" / f"bench-{architecture}").is_dir():
            classifier_checkpoint(root, architecture, num_classes=1000, size=224, project_id=f"bench-{architecture}",
                                  experiment_id=f"exp-{architecture}")


def bench_exports(root: Path, repeats: int) -> list[dict]:
    """End-to-end export (load → build → export → simplify → validate → store) per model."""
    from exporter import ExportRequest, Workspace, export_checkpoint

    build_models(root)
    ws = Workspace(root)
    rows = []
    for project in ws.projects():
        for experiment in project.experiments():
            totals, stages, record = [], [], None
            for _ in range(repeats):
                start = time.perf_counter()
                record = export_checkpoint(ws, ExportRequest(project.id, experiment.id)).to_json()
                totals.append(time.perf_counter() - start)
                stages.append(record["timings_s"])
            rows.append({"model": f"{project.id}/{experiment.id}", "architecture": record["model"]["architecture"],
                         "input": record["model"]["input_shape"], "size_mb": record["output_size_mb"],
                         "verdict": record["validation"]["verdict"], "max_diff": record["validation"]["max_diff"],
                         "total_s": stats(totals),
                         "stages_s": {k: round(statistics.median(s.get(k, 0) for s in stages), 3)
                                      for k in stages[0]}})
    return rows


SPEED_SECONDS = 2.0  # timed seconds per runtime and batch size (the product's default)


def bench_speed(root: Path, projects: tuple[str, ...] | None = None) -> list[dict]:
    """Every format × precision of resnet50 @224 and of each demo task's first experiment, made by the product's
    own export-all: each exported, validated, evaluated on the demo's labelled set, then benchmarked (file and
    PyTorch eager, batch 1 and 8) by its benchmark job — the table is what the Compare page shows."""
    from demo import DEMO_PROJECTS
    from exporter import Workspace
    from exporter.jobs import refresh, start_export_all

    ws = Workspace(root)
    out = []
    for project_id in projects or ("bench-resnet50", "bench-resnet18", *DEMO_PROJECTS):
        experiment = ws.project(project_id).experiments()[0]
        started = time.perf_counter()
        launched = start_export_all(ws, project_id, experiment.id, benchmark={"seconds": SPEED_SECONDS})
        pending, records = [r.id for r in launched["started"]], {}
        while pending:
            time.sleep(2)
            for export_id in list(pending):
                record = refresh(ws, export_id)
                if not record.active and not any(b.status in ("queued", "running") for b in record.benchmarks):
                    records[export_id], pending = record, [p for p in pending if p != export_id]
        ordered = [records[r.id] for r in launched["started"]]
        out.append(speed_entry(ws, project_id, ordered, launched["skipped"], time.perf_counter() - started))
    return out


def speed_entry(ws, project_id: str, records: list, skipped: list[dict], seconds: float) -> dict:
    """One model's rows of the speed table from its exports' records."""
    from exporter.tradeoffs import compare_rows, fastest_within, pytorch_baseline

    rows = compare_rows(records)
    for row, record in zip(rows, records, strict=True):
        bench = record.benchmark
        row["job_s"] = bench.duration_s if bench else None
        row["export_s"] = round(sum(record.timings_s.values()), 1) if record.timings_s else None
        failed = record.benchmarks[-1].error if record.benchmarks else None
        row["error"] = record.error.message if record.error else failed.message if failed else None
    return {"project": project_id, "task": ws.project(project_id).task, "model": records[0].experiment_id,
            "rows": rows, "skipped": skipped, "pytorch": pytorch_baseline(records),
            "fastest_within_0.01": (fastest_within(rows, 0.01) or {}).get("id"), "minutes": round(seconds / 60, 1)}


PRECISION_VARIANTS = (("ONNX fp32", "onnx", {}), ("ONNX fp16", "onnx", {"precision": "fp16"}),
                      ("ONNX fp16 auto", "onnx", {"precision": "fp16", "accuracy": "auto"}),
                      ("ONNX int8 static", "onnx", {"precision": "int8", "quantization": "static"}),
                      ("ONNX int8 static auto", "onnx", {"precision": "int8", "quantization": "static",
                                                         "accuracy": "auto"}),
                      ("OpenVINO int8 (NNCF)", "openvino", {"precision": "int8"}))


def bench_precision(root: Path, projects: tuple[str, ...] | None = None) -> list[dict]:
    """Reduced precision on each demo task's first experiment, before and after accuracy=auto: the gate's
    figures (metric drop on the labelled set, validation agreement), file size and p50 at batch 1 (benchmark
    job, 1 s), and the time the accuracy-aware rounds took."""
    from demo import DEMO_PROJECTS
    from exporter import ExportRequest, Workspace, export_checkpoint
    from exporter.errors import ExportError
    from exporter.service import benchmark_export
    from exporter.validation import AGREEMENT_METRICS

    ws = Workspace(root)
    rows = []
    for project_id in projects or DEMO_PROJECTS:
        project = ws.project(project_id)
        experiment = project.experiments()[0]
        for label, fmt, options in PRECISION_VARIANTS:
            row = {"project": project_id, "task": project.task, "variant": label}
            try:
                record = export_checkpoint(ws, ExportRequest(project_id, experiment.id, format=fmt, options=options))
            except ExportError as exc:
                rows.append({**row, "error": exc.message})
                continue
            if record.status != "completed":
                rows.append({**row, "error": record.error.message})
                continue
            bench = benchmark_export(ws, record.id, {"batch_sizes": [1], "seconds": 1.0}).benchmarks[-1]
            metrics = record.validation.task_metrics
            search = record.accuracy_search
            rows.append({**row, "size_mb": record.output_size_mb, "validation": record.validation.verdict,
                         "agreement": next((metrics[k] for k in AGREEMENT_METRICS if k in metrics), None),
                         "drop": record.evaluation.drop if record.evaluation else None,
                         "gate": record.evaluation.verdict if record.evaluation else None,
                         "p50_ms": bench.figure("file", 1, "p50_ms") if bench.status == "completed" else None,
                         "rounds": len(search.rounds) - 1 if search else None,
                         "chosen": search.chosen if search else None, "met": search.met if search else None,
                         "kept_float": len(search.rounds[search.chosen]["kept_float"]) if search else None,
                         "search_s": search.duration_s if search else None,
                         "round0_drop": search.rounds[0].get("drop") if search else None})
    return rows


def precision_markdown(rows: list[dict]) -> list[str]:
    def num(value, form: str) -> str:
        return "—" if value is None else format(value, form)

    lines = ["| task | file | MB | validation | agreement | metric drop | p50 b1 ms | accuracy=auto |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['task']} | {row['variant']} | failed: {row['error'][:100]} | | | | | |")
            continue
        auto = ("" if row["rounds"] is None else
                f"{'met' if row['met'] else 'NOT met'}: round {row['chosen']} of {row['rounds']}, "
                f"{row['kept_float']} nodes in float (round 0 drop {num(row['round0_drop'], '+.4f')}), "
                f"{row['search_s']:.1f} s")
        lines.append(f"| {row['task']} | {row['variant']} | {num(row['size_mb'], '.2f')} | {row['validation']} | "
                     f"{num(row['agreement'], '.3f')} | {num(row['drop'], '+.4f')} | {num(row['p50_ms'], '.2f')} | "
                     f"{auto} |")
    return lines


def independent_ort(speed: list[dict], root: Path, runs: int = 50) -> dict:
    """resnet50 @224 ONNX fp32 at batch 1: the benchmark job's p50 beside a plain ``onnxruntime`` timing of the
    same file in a separate process (default session options, the same thread count)."""
    import subprocess

    from exporter import Workspace
    from exporter.store import find_export

    row = next(r for entry in speed if entry["project"] == "bench-resnet50" for r in entry["rows"]
               if r["format"] == "onnx" and r["variant"] == "fp32")
    store, record = find_export(Workspace(root), row["id"])
    path = store.export_dir(record.id) / record.output_file
    script = (
        "import sys, time, numpy as np, onnxruntime as ort\n"
        "o = ort.SessionOptions(); o.intra_op_num_threads = int(sys.argv[2])\n"
        "s = ort.InferenceSession(sys.argv[1], o, providers=['CPUExecutionProvider'])\n"
        "x = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)\n"
        "[s.run(None, {'input': x}) for _ in range(5)]\n"
        "t = []\n"
        "for _ in range(int(sys.argv[3])):\n"
        "    a = time.perf_counter(); s.run(None, {'input': x}); t.append((time.perf_counter() - a) * 1e3)\n"
        "print(float(np.median(t)))\n")
    threads = record.benchmark.threads
    plain = float(subprocess.run([sys.executable, "-c", script, str(path), str(threads), str(runs)],
                                 capture_output=True, text=True, check=True).stdout)
    ours = row["p50_ms"]
    return {"export": record.id, "threads": threads, "benchmark_p50_ms": ours,
            "plain_onnxruntime_p50_ms": round(plain, 3),
            "ratio": round(ours / plain, 3), "within_25_percent": abs(ours / plain - 1) <= 0.25}


EVAL_FORMATS = (("onnx fp32", "onnx", {}),
                ("onnx int8 static", "onnx", {"precision": "int8", "quantization": "static"}),
                ("torchscript", "torchscript", {}), ("openvino fp32", "openvino", {}))


def bench_evaluation(root: Path, formats: tuple = EVAL_FORMATS) -> list[dict]:
    """Per demo project and format: PyTorch's vs the file's primary metric on its 100 labelled images, and
    the evaluation's time with PyTorch's predictions computed (cache miss) and read from the cache (hit)."""
    from demo import DEMO_PROJECTS, build_demo
    from exporter import ExportRequest, Workspace, export_checkpoint
    from exporter.errors import ExportError
    from exporter.evaluation import CACHE_DIR
    from exporter.service import evaluate_export

    build_demo(root)
    ws = Workspace(root)
    rows = []
    for project_id in DEMO_PROJECTS:
        experiment = ws.project(project_id).experiments()[0]
        for label, fmt, options in formats:
            try:
                record = export_checkpoint(ws, ExportRequest(project_id, experiment.id, format=fmt,
                                                             options={**options, "evaluate": False}))
            except ExportError as exc:  # a format that cannot carry the task says why
                rows.append({"project": project_id, "format": label, "refused": exc.message})
                continue
            if record.status != "completed":
                rows.append({"project": project_id, "format": label, "refused": record.error.message})
                continue
            timings = {}
            for kind in ("miss", "hit"):
                if kind == "miss":
                    shutil.rmtree(root / CACHE_DIR, ignore_errors=True)
                start = time.perf_counter()
                evaluation = evaluate_export(ws, record.id, {"max_images": 100}).evaluation
                timings[kind] = round(time.perf_counter() - start, 2)
            name = evaluation.primary_metric
            rows.append({"project": project_id, "task": ws.project(project_id).task, "format": label,
                         "metric": name, "pytorch": round(evaluation.pytorch[name], 4),
                         "file": round(evaluation.file[name], 4), "drop": round(evaluation.drop, 4) + 0.0,
                         "verdict": evaluation.verdict, "images": evaluation.dataset["images"],
                         "seconds_miss": timings["miss"], "seconds_hit": timings["hit"]})
    return rows


def bench_streaming(root: Path, size_bytes: int) -> dict:
    """Server RSS growth while one client streams a ``size_bytes`` export to /dev/null, and while
    one streams a ``size_bytes`` checkpoint to ``POST /api/uploads`` (the dashboard's import path)."""
    import httpx

    from exporter.store import ExportStore
    from exporter.workspace import Workspace
    from testkit.models import write_project
    from testkit.server import running_server

    write_project(root, "bench-download")
    store = ExportStore.for_project(Workspace(root), "bench-download")
    record = store.create(project_id="bench-download", experiment_id="-", checkpoint="best", format="onnx",
                          status="completed", created_at="x")
    path = store.export_dir(record.id) / "model.onnx"
    block = os.urandom(1 << 20)
    with open(path, "wb") as fh:
        for _ in range(size_bytes >> 20):
            fh.write(block)
    store.update(record.id, output_file="model.onnx",
                 files=[{"name": "model.onnx", "size_bytes": path.stat().st_size, "sha256": "-"}])
    with running_server(root, AISTUDIO_MAX_CHECKPOINT_MB=str(2 * (size_bytes >> 20))) as base:
        httpx.get(f"{base}/api/formats")  # warm up
        with _server_rss(base) as download:
            with httpx.stream("GET", f"{base}/api/export/{record.id}/download", timeout=600) as response:
                download["bytes"] = sum(len(chunk) for chunk in response.iter_bytes(1 << 20))
        with _server_rss(base) as upload:
            response = httpx.post(f"{base}/api/uploads", params={"filename": "big.ckpt"}, timeout=600,
                                  content=(block for _ in range(size_bytes >> 20)))
            upload["bytes"] = response.json()["size_bytes"]
    return {"download": download, "upload": upload, "target_growth_mb": 64}


@contextlib.contextmanager
def _server_rss(base: str):
    """Sample the server's RSS every 20 ms while the block runs; fill in seconds, MB/s and growth."""
    import psutil

    port = base.rsplit(":", 1)[1]
    server = next(p for p in psutil.process_iter(["cmdline"])
                  if p.info["cmdline"] and "streamlit" in " ".join(p.info["cmdline"]) and port in p.info["cmdline"])
    before = server.memory_info().rss
    peak, done, result = [before], threading.Event(), {}

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], server.memory_info().rss)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    start = time.perf_counter()
    try:
        yield result
    finally:
        seconds = time.perf_counter() - start
        done.set()
        sampler.join()
    result.update({"seconds": round(seconds, 2), "mb_per_s": round(result["bytes"] / 1e6 / seconds, 1),
                   "rss_before_mb": round(before / 1e6, 1), "rss_peak_mb": round(peak[0] / 1e6, 1),
                   "rss_growth_mb": round((peak[0] - before) / 1e6, 1)})


def evaluation_markdown(rows: list[dict]) -> list[str]:
    lines = ["| task | format | metric | PyTorch | file | drop | verdict | evaluate 100 images s: cache miss / hit |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if "refused" in row:
            lines.append(f"| {row['project']} | {row['format']} | refused: {row['refused'][:90]} | | | | | |")
        else:
            lines.append(f"| {row['task']} | {row['format']} | {row['metric']} | {row['pytorch']} | {row['file']} | "
                         f"{row['drop']} | {row['verdict']} | {row['seconds_miss']} / {row['seconds_hit']} |")
    return lines


def speed_markdown(speed: list[dict], check: dict | None) -> list[str]:
    def num(value, form: str) -> str:
        return "—" if value is None else format(value, form)

    lines = ["| model | format | precision | file MB | export s | validation | metric Δ | p50 b1 ms | img/s b8 | "
             "peak MB | × eager b1 | job s |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for entry in speed:
        base = entry["pytorch"] or {}
        lines.append(f"| **{entry['project']}** ({entry['task']}) | PyTorch eager | fp32 | | | | | "
                     f"{num(base.get('p50_ms'), '.2f')} | {num(base.get('throughput_ips'), '.1f')} | "
                     f"{num(base.get('peak_mb'), '.0f')} | 1 | |")
        for r in entry["rows"]:
            star = " ★" if r["id"] == entry["fastest_within_0.01"] else ""
            precision = r["variant"] + (f" (runs {r['runs_at']})" if r.get("runs_at") else "")
            lines.append(f"| | {r['display_format']}{star} | {precision} | {num(r['size_mb'], '.1f')} | "
                         f"{num(r.get('export_s'), '.1f')} | {r['verdicts']} | {num(r['delta'], '+.4f')} | "
                         f"{num(r['p50_ms'], '.2f')} | "
                         f"{num(r['throughput_ips'], '.1f')} | {num(r['peak_mb'], '.0f')} | "
                         f"{num(r['speedup'], '.2f')} | "
                         f"{num(r['job_s'], '.0f')} |" + (f" {r['error'][:80]}" if r.get("error") else ""))
        for skip in entry["skipped"]:
            if "tensorrt" not in skip["format"]:
                reason = skip["reason"][:90]
                lines.append(f"| | {skip['format']} | {skip['variant']} | refused: {reason} | | | | | | | | |")
    lines.append("")
    lines.append("★ the fastest export whose metric drops by at most 0.01 (and validates). export s = the export job "
                 "(load, build, export, validate, evaluate, store). metric Δ = file − PyTorch "
                 "on the labelled set (at the precision the runtime runs at). peak MB = resident memory growth while "
                 "loading and running. job s = the whole benchmark job.")
    if check:
        lines.append(f"\nresnet50 @224 ONNX fp32, batch 1, {check['threads']} threads: benchmark job p50 "
                     f"{check['benchmark_p50_ms']:.2f} ms vs plain onnxruntime in a separate process "
                     f"{check['plain_onnxruntime_p50_ms']:.2f} ms → ratio {check['ratio']} "
                     f"({'within' if check['within_25_percent'] else 'OUTSIDE'} ±25 %).")
    return lines


def markdown(results: dict) -> str:
    lines = ["| model | input | file MB | validation | max diff | export+validate s (median [min–max]) |",
             "|---|---|---|---|---|---|"]
    for row in results["exports"]:
        t = row["total_s"]
        lines.append(f"| {row['model']} | {row['input']} | {row['size_mb']} | {row['verdict']} | "
                     f"{row['max_diff']:.1e} | {t['median']} [{t['min']}–{t['max']}] |")
    lines += ["", *speed_markdown(results.get("speed", []), results.get("independent_ort"))]
    lines += ["", *evaluation_markdown(results.get("evaluation", []))]
    lines += ["", *precision_markdown(results.get("precision", []))]
    lines += ["", overhead_line(results["overhead"]),
              "", "| model | params M | checkpoint MB | export+validate s | peak RSS MB | growth MB | growth / ckpt | "
              "validation |", "|---|---|---|---|---|---|---|---|"]
    for row in results["cost"]:
        lines.append(f"| {row['model']} @{row['input']} | {row['params_m']} | {row['checkpoint_mb']} | "
                     f"{row['seconds']} | {row['peak_rss_mb']} | {row['growth_mb']} | "
                     f"{row['growth_per_checkpoint']}× | {row['verdict']} |")
    dash = results["dashboard"]
    lines += ["", "| dashboard (Chromium, warm server) | median s [min–max] |", "|---|---|"]
    for name, t in dash["pages"].items():
        lines.append(f"| {name} page | {t['median']} [{t['min']}–{t['max']}] |")
    h, a = dash["history_with_records"], dash["api_exports_ms"]
    lines += [f"| history with {h['records']:,} exports | {h['median']} [{h['min']}–{h['max']}] |",
              f"| GET /api/exports with {a['records']:,} exports | {a['median'] / 1000:.3f} [{a['min'] / 1000:.3f}–"
              f"{a['max'] / 1000:.3f}] |"]
    lines.append("")
    for way, d in (("download", results["streaming"]["download"]), ("upload", results["streaming"]["upload"])):
        lines.append(f"Streaming a {d['bytes'] / 1e9:.2f} GB {way}: server RSS {d['rss_before_mb']} → peak "
                     f"{d['rss_peak_mb']} MB (growth {d['rss_growth_mb']} MB, target < 64 MB), {d['mb_per_s']} MB/s.  ")
    if results.get("ray"):
        lines += ["", *ray_bench.ray_markdown(results["ray"])]
    if results.get("serving"):
        lines += ["", *serving.serving_markdown(results["serving"])]
    if results.get("families"):
        lines += ["", *families.families_markdown(results["families"])]
    if results.get("family-formats"):
        lines += ["", *family_formats.family_formats_markdown(results["family-formats"])]
    if results.get("rcnn"):
        lines += ["", *rcnn_stages.rcnn_bench_markdown(results["rcnn"])]
    return "\n".join(lines) + "\n"


def overhead_line(o: dict) -> str:
    return (f"Pipeline overhead, {o['model']}: ours {o['ours_s']['median']} s [{o['ours_s']['min']}–"
            f"{o['ours_s']['max']}] vs raw tools {o['raw_s']['median']} s [{o['raw_s']['min']}–{o['raw_s']['max']}]"
            f" → **{o['ratio']}×** (target ≤ {o['target_ratio']}×; {o['note']}).")


def _write(part: str, data, lines: list[str]) -> None:
    """results/<part>.json and .md, and the table on stdout."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{part}.json").write_text(json.dumps(data, indent=2))
    (RESULTS / f"{part}.md").write_text("\n".join(lines) + "\n")
    sys.stdout.write("\n".join(lines) + "\n")


def _one_part(part: str, root: Path) -> tuple[object, list[str]]:
    """``--only PART``: that part alone, as ``(data, markdown lines)``."""
    if part == "ray":
        result = ray_bench.bench_ray(root / "ray")
        return result, ray_bench.ray_markdown(result)
    if part == "serving":
        rows = serving.bench_serving(root / "serving")
        return rows, serving.serving_markdown(rows)
    if part == "families":
        rows = families.bench_families(root / "families")
        return rows, families.families_markdown(rows)
    if part == "family-formats":
        rows = family_formats.bench_family_formats(root / "family-formats")
        return rows, family_formats.family_formats_markdown(rows)
    if part == "rcnn":
        result = rcnn_stages.bench_rcnn(root / "rcnn")
        return result, rcnn_stages.rcnn_bench_markdown(result)
    if part == "overhead":
        result = scale.bench_overhead(root / "overhead", 5)
        return result, [overhead_line(result)]
    if part == "evaluation":
        rows = bench_evaluation(root)
        return rows, evaluation_markdown(rows)
    build_models(root)
    if part == "precision":
        rows = bench_precision(root)
        return rows, precision_markdown(rows)
    # speed, or edge: every format of resnet18 @224 and the demo classifier
    speed = bench_speed(root, ("bench-resnet18", "demo-classification") if part == "edge" else None)
    check = independent_ort(speed, root) if part == "speed" else None
    return {"speed": speed, "independent_ort": check}, speed_markdown(speed, check)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="1 repeat and a 256 MB download")
    parser.add_argument("--only", choices=("evaluation", "speed", "edge", "precision", "ray", "serving", "families",
                                           "family-formats", "rcnn", "overhead"),
                        help="run one part alone (results/<part>.md)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="aistudio-bench-"))
    if args.only:
        try:
            data, lines = _one_part(args.only, root)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        _write(args.only, data, lines)
        return
    try:
        started = time.perf_counter()
        results = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
                   "exports": bench_exports(root / "exports", 1 if args.quick else 3),
                   "speed": bench_speed(root / "exports", ("bench-resnet50", "demo-classification")
                                        if args.quick else None),
                   "evaluation": bench_evaluation(root / "exports",  # the demo built above
                                                  EVAL_FORMATS[:2] if args.quick else EVAL_FORMATS),
                   "precision": bench_precision(root / "exports", ("demo-oriented",) if args.quick else None),
                   "overhead": scale.bench_overhead(root / "overhead", 1 if args.quick else 3),
                   "cost": scale.bench_cost(root / "cost", scale.COST_MODELS[:3] if args.quick else scale.COST_MODELS),
                   "dashboard": scale.bench_dashboard(root / "exports", 10_000, 3 if args.quick else 5),
                   "streaming": bench_streaming(root / "download", (256 if args.quick else 1024) << 20),
                   "ray": ray_bench.bench_ray(root / "ray"),
                   "serving": serving.bench_serving(root / "serving", 1.0 if args.quick else serving.SECONDS),
                   "families": families.bench_families(root / "families"),
                   "family-formats": family_formats.bench_family_formats(root / "family-formats"),
                   "rcnn": rcnn_stages.bench_rcnn(root / "rcnn")}
        results["independent_ort"] = independent_ort(results["speed"], root / "exports")
        results["bench_minutes"] = round((time.perf_counter() - started) / 60, 1)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    scale.cost_plot(results["cost"], RESULTS)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2))
    (RESULTS / "latest.md").write_text(markdown(results))
    sys.stdout.write(markdown(results))


if __name__ == "__main__":
    main()

