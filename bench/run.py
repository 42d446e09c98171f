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

from bench import scale
from bench.scale import stats

RESULTS = Path(__file__).resolve().parent / "results"


def bench_exports(root: Path, repeats: int) -> list[dict]:
    """End-to-end export (load → build → export → simplify → validate → store) per model."""
    from demo import build_demo
    from exporter import ExportRequest, Workspace, export_checkpoint
    from tests.helpers import classifier_checkpoint

    build_demo(root)
    classifier_checkpoint(root, "resnet50", num_classes=1000, size=224, project_id="bench-resnet50",
                          experiment_id="exp-resnet50")
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


FORMATS = [("onnx fp32", "onnx", {}), ("onnx fp16", "onnx", {"precision": "fp16"}),
           ("onnx int8 dynamic", "onnx", {"precision": "int8"}),
           ("onnx int8 static", "onnx", {"precision": "int8", "quantization": "static"}),
           ("torchscript", "torchscript", {}), ("openvino fp32", "openvino", {}),
           ("openvino fp16 weights", "openvino", {"compress_to_fp16": True})]


def _latency(fn, x, repeats: int) -> dict[str, float]:
    for _ in range(5):
        fn(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(x)
        times.append((time.perf_counter() - start) * 1000)
    return stats(times)


def bench_formats(root: Path, repeats: int) -> list[dict]:
    """Export time, file size and batch-1 latency per format, side by side with PyTorch eager."""
    import numpy as np
    import torch

    from exporter import ExportRequest, Workspace, export_checkpoint
    from exporter.checkpoint import load_checkpoint
    from exporter.formats import get_format
    from exporter.pipeline import build_wrapped

    torch.set_num_threads(2)
    ws = Workspace(root)
    rows = []
    models = (("demo-classification", "exp-resnet18-shapes"), ("bench-resnet50", "exp-resnet50"))
    for project_id, experiment_id in models:
        experiment = ws.project(project_id).experiment(experiment_id)
        spec, module = build_wrapped(load_checkpoint(experiment.checkpoint("best").path), experiment)
        x = torch.rand(1, *spec.input_size)
        with torch.no_grad():
            eager = _latency(module, x, repeats)
        rows.append({"model": spec.architecture, "input": list(x.shape), "format": "pytorch eager",
                     "latency_ms": eager, "speedup": 1.0})
        for label, fmt, options in FORMATS:
            request = ExportRequest(project_id, experiment_id, format=fmt, options=options)
            record = export_checkpoint(ws, request).to_json()
            folder = ws.project(project_id).exports_dir / record["id"]
            path = folder / record["output_file"]
            if fmt == "torchscript":  # in-process, like a deployment would load it
                loaded = torch.jit.load(str(path)).eval()

                def run(a, loaded=loaded):
                    with torch.no_grad():
                        return loaded(a)
            else:
                runner = get_format(fmt).load(path, record["model"])

                def run(a, runner=runner):
                    return runner.run({"input": a.numpy() if hasattr(a, "numpy") else a})
            latency = _latency(run, x if fmt == "torchscript" else x.numpy().astype(np.float32), repeats)
            rows.append({"model": spec.architecture, "input": list(x.shape), "format": label,
                         "export_s": round(sum(record["timings_s"].values()), 2),
                         "size_mb": record["output_size_mb"], "verdict": record["validation"]["verdict"],
                         "top1_agreement": record["validation"]["task_metrics"].get("top1_agreement"),
                         "latency_ms": latency,
                         "speedup": round(eager["median"] / latency["median"], 2)})
    return rows


TASK_MODELS = (("demo-detection", "exp-fasterrcnn-resnet18-fpn"),
               ("demo-instance-segmentation", "exp-maskrcnn-resnet18-fpn"),
               ("demo-segmentation", "exp-lraspp-shapes"), ("demo-oriented", "exp-obb-resnet18"))


def bench_tasks(root: Path, repeats: int) -> list[dict]:
    """Per task: ONNX export time, file size, batch-1 latency in ONNX Runtime vs the PyTorch wrapper."""
    import torch

    from exporter import ExportRequest, Workspace, export_checkpoint
    from exporter.checkpoint import load_checkpoint
    from exporter.formats import get_format
    from exporter.pipeline import build_wrapped
    from exporter.validation import load_images

    torch.set_num_threads(2)
    ws = Workspace(root)
    rows = []
    for project_id, experiment_id in TASK_MODELS:
        project = ws.project(project_id)
        experiment = project.experiment(experiment_id)
        spec, module = build_wrapped(load_checkpoint(experiment.checkpoint("best").path), experiment)
        x = load_images(project.sample_images()[:1], spec.input_size, spec.normalization)  # a real scene
        with torch.no_grad():
            eager = _latency(module, x, repeats)
        record = export_checkpoint(ws, ExportRequest(project_id, experiment_id)).to_json()
        runner = get_format("onnx").load(project.exports_dir / record["id"] / record["output_file"], record["model"])
        ort = _latency(lambda a, runner=runner: runner.run({"input": a}), x.numpy(), repeats)
        rows.append({"task": spec.task, "model": spec.architecture, "input": list(x.shape),
                     "export_s": round(sum(record["timings_s"].values()), 2), "size_mb": record["output_size_mb"],
                     "verdict": record["validation"]["verdict"], "metrics": record["validation"]["task_metrics"],
                     "eager_ms": eager, "onnxruntime_ms": ort, "speedup": round(eager["median"] / ort["median"], 2)})
    return rows


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
    from tests.helpers import write_project
    from tests.server import running_server

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


def markdown(results: dict) -> str:
    lines = ["| model | input | file MB | validation | max diff | export+validate s (median [min–max]) |",
             "|---|---|---|---|---|---|"]
    for row in results["exports"]:
        t = row["total_s"]
        lines.append(f"| {row['model']} | {row['input']} | {row['size_mb']} | {row['verdict']} | "
                     f"{row['max_diff']:.1e} | {t['median']} [{t['min']}–{t['max']}] |")
    lines += ["", "| model | format | export s | file MB | validation | top-1 agr. | batch-1 ms (median [min–max]) "
              "| × eager |", "|---|---|---|---|---|---|---|---|"]
    for row in results["formats"]:
        t = row["latency_ms"]
        lines.append(f"| {row['model']} | {row['format']} | {row.get('export_s', '—')} | {row.get('size_mb', '—')} | "
                     f"{row.get('verdict', '—')} | {row.get('top1_agreement', '—')} | "
                     f"{t['median']:.1f} [{t['min']:.1f}–{t['max']:.1f}] | {row['speedup']} |")
    lines += ["", "| task | model | export s | file MB | validation | PyTorch batch-1 ms | ONNX Runtime ms | × |",
              "|---|---|---|---|---|---|---|---|"]
    for row in results.get("tasks", []):
        e, o = row["eager_ms"], row["onnxruntime_ms"]
        lines.append(f"| {row['task']} | {row['model']} | {row['export_s']} | {row['size_mb']} | {row['verdict']} | "
                     f"{e['median']:.1f} [{e['min']:.1f}–{e['max']:.1f}] | {o['median']:.1f} [{o['min']:.1f}–"
                     f"{o['max']:.1f}] | {row['speedup']} |")
    lines += ["", *evaluation_markdown(results.get("evaluation", []))]
    o = results["overhead"]
    lines += ["", f"Pipeline overhead, {o['model']}: ours {o['ours_s']['median']} s [{o['ours_s']['min']}–"
              f"{o['ours_s']['max']}] vs raw tools {o['raw_s']['median']} s [{o['raw_s']['min']}–{o['raw_s']['max']}]"
              f" → **{o['ratio']}×** (target ≤ {o['target_ratio']}×; {o['note']}).",
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
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="1 repeat and a 256 MB download")
    parser.add_argument("--only", choices=("evaluation",), help="run one part alone (results/<part>.md)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="aistudio-bench-"))
    if args.only == "evaluation":
        try:
            rows = bench_evaluation(root)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "evaluation.json").write_text(json.dumps(rows, indent=2))
        (RESULTS / "evaluation.md").write_text("\n".join(evaluation_markdown(rows)) + "\n")
        sys.stdout.write("\n".join(evaluation_markdown(rows)) + "\n")
        return
    try:
        started = time.perf_counter()
        results = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
                   "exports": bench_exports(root / "exports", 1 if args.quick else 3),
                   "formats": bench_formats(root / "exports", 10 if args.quick else 30),
                   "tasks": bench_tasks(root / "exports", 10 if args.quick else 30),
                   "evaluation": bench_evaluation(root / "exports",  # the demo built above
                                                  EVAL_FORMATS[:2] if args.quick else EVAL_FORMATS),
                   "overhead": scale.bench_overhead(root / "overhead", 1 if args.quick else 3),
                   "cost": scale.bench_cost(root / "cost", scale.COST_MODELS[:3] if args.quick else scale.COST_MODELS),
                   "dashboard": scale.bench_dashboard(root / "exports", 10_000, 3 if args.quick else 5),
                   "streaming": bench_streaming(root / "download", (256 if args.quick else 1024) << 20)}
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
