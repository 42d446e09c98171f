"""How fast an exported file runs where it runs, beside PyTorch eager on the same checkpoint.

A benchmark measures two runtimes in one job, each in a fresh child process of its own (so its
memory growth is its own and neither warms the other's caches): the file in its format's runtime
set up as it would be deployed (``ExportFormat.deploy``), and PyTorch eager on the checkpoint,
with the same thread count and the same inputs (the project's sample images, tiled to the batch).
Per runtime: load time, first inference, then per batch size a warm-up and timed runs until
``seconds`` have passed (at least ``MIN_RUNS``, at most ``MAX_RUNS``): p50/p90/p99/mean latency,
throughput, and the peak growth of the process's resident memory over its size before loading.

When the deployed runtime computes differently from how the export was validated (OpenVINO runs
in bf16 on CPUs with AMX/AVX-512 BF16 unless told otherwise), the job validates — and, when the
project has a labelled set, evaluates — the file at that precision too, so a speed figure is never
shown beside an accuracy figure measured some other way.

Entries live in the record's ``benchmarks`` list, each with the machine it ran on.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from exporter.errors import ExportError, NotFoundError, UsageError, one_line, resource_error
from exporter.machine import machine_stamp
from exporter.report import require_current

DEFAULT_BATCHES = (1, 8)
DEFAULT_SECONDS = 2.0
SECONDS_ENV = "AISTUDIO_BENCHMARK_SECONDS"  # the default timed seconds per runtime and batch size
MIN_RUNS, MAX_RUNS, WARMUP_RUNS = 5, 2000, 2
KEEP_LATENCIES = 200  # latencies kept per batch size for the distribution plot (evenly thinned)
MAX_BATCH, MAX_SECONDS = 256, 120.0
RUNTIMES = ("file", "pytorch")
EAGER_MODULES = ("torch", "torchvision", "exporter.checkpoint", "exporter.pipeline")
Progress = Callable[[str, float], None]


def parse_request(raw: dict[str, Any] | None) -> dict[str, Any]:
    """Checked benchmark settings: ``batch_sizes`` (list or "1,8"), ``threads``, ``seconds``; absent = default.

    Raises:
        UsageError: a value out of range, with the range.
    """
    raw = {k: v for k, v in (raw or {}).items() if v not in (None, "", [])}
    unknown = set(raw) - {"batch_sizes", "threads", "seconds"}
    if unknown:
        raise UsageError(f"Unknown benchmark setting {', '.join(sorted(unknown))}; valid: batch_sizes, threads, "
                         "seconds.")
    out: dict[str, Any] = {}
    try:
        if "batch_sizes" in raw:
            sizes = raw["batch_sizes"]
            sizes = [int(s) for s in (sizes.split(",") if isinstance(sizes, str) else sizes)]
            if not sizes or any(not 1 <= s <= MAX_BATCH for s in sizes):
                raise ValueError
            out["batch_sizes"] = sorted(set(sizes))
        if "threads" in raw:
            out["threads"] = int(raw["threads"])
            if not 1 <= out["threads"] <= 1024:
                raise ValueError
        if "seconds" in raw:
            out["seconds"] = float(raw["seconds"])
            if not 0.01 <= out["seconds"] <= MAX_SECONDS:
                raise ValueError
    except (TypeError, ValueError):
        raise UsageError(f"Benchmark settings must be batch sizes 1–{MAX_BATCH} (e.g. 1,8), threads ≥ 1 and "
                         f"seconds 0.01–{MAX_SECONDS:g}; got {raw}.") from None
    return out


def default_seconds() -> float:
    """Timed seconds per runtime and batch size when a request gives none (``$AISTUDIO_BENCHMARK_SECONDS``)."""
    try:
        return min(MAX_SECONDS, max(0.01, float(os.environ[SECONDS_ENV])))
    except (KeyError, ValueError):
        return DEFAULT_SECONDS


def default_threads() -> int:
    """Threads a runtime gets by default: the physical cores (what ONNX Runtime picks by itself)."""
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def batch_sizes_for(record: Any, requested: list[int] | None) -> list[int]:
    """The batch sizes to time: the request's (each must fit the file), else 1 and 8 for a dynamic
    batch, else the file's fixed batch.

    Raises:
        UsageError: a size a fixed-batch file cannot take.
    """
    shape = record.model.input_shape or [1]
    largest = record.options.get("max_batch")  # an engine's optimisation profile
    if largest and requested and max(requested) > largest:
        raise UsageError(f"Export {record.id} accepts batches up to {largest} (its max_batch); benchmark at most that.")
    if not record.options.get("dynamic_batch", True):
        fixed = int(shape[0])
        if requested and set(requested) != {fixed}:
            raise UsageError(f"Export {record.id} has a fixed batch of {fixed}; benchmark it at --batch {fixed} "
                             "or export it with a dynamic batch.")
        return [fixed]
    return list(requested or sorted({min(size, largest or size) for size in DEFAULT_BATCHES}))


# ---------------------------------------------------------------- the job


def new_entry(requested: dict[str, Any], status: str = "queued") -> dict[str, Any]:
    """A benchmark entry before it runs (``queued`` behind its export, or ``running``)."""
    return {"id": f"bench-{uuid.uuid4().hex[:8]}", "status": status, "requested": requested,
            "progress": {"stage": "queued", "fraction": 0.0}}


def add_entry(workspace: Any, export_id: str, requested: dict[str, Any] | None) -> tuple[Any, str]:
    """Check the export and the settings, then append a ``running`` entry; returns ``(store, entry id)``.

    Raises:
        UsageError / NotFoundError: bad settings, an export that cannot be benchmarked, or one being
            benchmarked already (nothing is added).
    """
    from exporter.jobs.slots import worker_alive
    from exporter.store import find_export

    store, record = find_export(workspace, export_id)
    require_current(store, record, "benchmark")
    settings = parse_request(requested)
    batch_sizes_for(record, settings.get("batch_sizes"))
    with store.lock():
        record = store.get(export_id)
        if any(b.status in ("queued", "running") and worker_alive(b.worker or record.worker)  # not a dead one
               for b in record.benchmarks):
            raise UsageError(f"Export {export_id} is being benchmarked already; wait for it or cancel it.")
        entry = new_entry(settings, status="running")
        store.update(export_id, benchmarks=[*(b.model_dump(mode="json") for b in record.benchmarks), entry])
    return store, entry["id"]


def run_benchmark(workspace: Any, export_id: str, entry_id: str) -> Any:
    """Run a queued/running benchmark entry of a completed export to the end; returns the record.

    Holds the whole machine (every worker slot) while it measures, so no other job skews the
    figures. A failure ends the entry ``failed`` with a typed error; it never raises ExportError.
    """
    from exporter.jobs.slots import process_identity, worker_slot
    from exporter.store import find_export, utc_now

    store, record = find_export(workspace, export_id)
    update_entry(store, export_id, entry_id, status="running", worker=process_identity(os.getpid()),
                 progress={"stage": "waiting for the machine", "fraction": 0.0})
    with worker_slot(workspace.root, exclusive=True):
        started = time.perf_counter()  # the job's own time, not its wait for the machine
        update_entry(store, export_id, entry_id, started_at=utc_now())
        try:
            result = _measure(workspace, store, store.get(export_id), _entry(store, export_id, entry_id),
                              lambda stage, f: update_entry(store, export_id, entry_id,
                                                            progress={"stage": stage, "fraction": round(f, 3)}))
        except ExportError as exc:
            return update_entry(store, export_id, entry_id, status="failed", finished_at=utc_now(),
                                error={**exc.to_dict(), "stage": "benchmark"})
        except Exception as exc:  # noqa: BLE001 - a bug must still end the entry, readably
            error = resource_error(exc, "benchmark") or ExportError(f"Internal error: {one_line(exc)}",
                                                                    stage="benchmark")
            return update_entry(store, export_id, entry_id, status="failed", finished_at=utc_now(),
                                error=error.to_dict())
    return update_entry(store, export_id, entry_id, status="completed", finished_at=utc_now(),
                        duration_s=round(time.perf_counter() - started, 2),
                        progress={"stage": "done", "fraction": 1.0}, **result)


def _entry(store: Any, export_id: str, entry_id: str) -> dict[str, Any]:
    for entry in store.get(export_id).model_dump(mode="json")["benchmarks"]:
        if entry["id"] == entry_id:
            return entry
    raise NotFoundError(f"Export {export_id} has no benchmark {entry_id} (cancelled?).")


def update_entry(store: Any, export_id: str, entry_id: str, **changes: Any) -> Any:
    """Change one benchmark entry of a record under the project's lock (a gone entry stays gone)."""
    with store.lock():
        record = store.get(export_id)
        entries = [e.model_dump(mode="json") for e in record.benchmarks]
        if not any(e["id"] == entry_id for e in entries):
            return record
        entries = [{**e, **changes} if e["id"] == entry_id else e for e in entries]
        return store.update(export_id, benchmarks=entries)


def drop_entries(store: Any, export_id: str, statuses: tuple[str, ...] = ("queued",)) -> Any:
    """Remove the benchmark entries in ``statuses`` (queued behind an export that did not complete; cancelled)."""
    with store.lock():
        record = store.get(export_id)
        kept = [e.model_dump(mode="json") for e in record.benchmarks if e.status not in statuses]
        return store.update(export_id, benchmarks=kept) if len(kept) != len(record.benchmarks) else record


def _measure(workspace: Any, store: Any, record: Any, entry: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """Both runtimes in their own processes, then the deploy-precision check; the entry's fields."""
    import numpy as np

    from exporter.formats import get_format
    from exporter.validation import input_pool

    requested = entry.get("requested") or {}
    require_current(store, record, "benchmark")
    sizes = batch_sizes_for(record, requested.get("batch_sizes"))
    threads = int(requested.get("threads") or default_threads())
    seconds = float(requested.get("seconds") or default_seconds())
    fmt = get_format(record.format)
    model = record.model
    pool, _ = input_pool(store.project.sample_images(), tuple(model.input_shape[1:]),
                         model.normalization or {"mean": [0.0], "std": [1.0]})
    with tempfile.TemporaryDirectory(prefix="aistudio-bench-") as tmp:
        inputs = Path(tmp) / "inputs.npy"
        np.save(inputs, _tile(pool.numpy(), max(sizes)))
        spec = {"workspace": str(workspace.root), "project": store.project.id, "export_id": record.id,
                "inputs": str(inputs), "batch_sizes": sizes, "threads": threads, "seconds": seconds}
        results: dict[str, Any] = {}
        for k, runtime in enumerate(RUNTIMES):
            span = (0.05 + 0.4 * k, 0.45 + 0.4 * k)
            on_gpu = (results.get("file", {}).get("settings") or {}).get("device") == "cuda"
            device = "cuda" if on_gpu else "cpu"  # eager runs where the file did
            results[runtime] = _child(
                {**spec, "runtime": runtime, "device": device}, Path(tmp),
                lambda stage, f, span=span, runtime=runtime: progress(
                    f"{runtime if runtime == 'pytorch' else fmt.display_name}: {stage}",
                    span[0] + f * (span[1] - span[0])))
    speedup = {}
    for fast, slow in zip(results["file"]["batches"], results["pytorch"]["batches"], strict=True):
        if fast["p50_ms"] > 0:
            speedup[str(fast["batch"])] = round(slow["p50_ms"] / fast["p50_ms"], 3)
    out: dict[str, Any] = {"batch_sizes": sizes, "threads": threads, "seconds": seconds,
                           "machine": machine_stamp(threads, results["file"].get("gpu")),
                           "results": results, "speedup_vs_pytorch": speedup}
    if results["file"].get("differs_from_validation"):
        progress(f"validating at {results['file']['settings']['precision']}", 0.88)
        out["deploy_check"] = deploy_check(workspace, store, record, threads)
    return out


def _tile(pool: Any, size: int) -> Any:
    import numpy as np

    reps = -(-size // len(pool))
    return np.ascontiguousarray(np.concatenate([pool] * reps)[:size])


def _child(spec: dict[str, Any], tmp: Path, progress: Progress) -> dict[str, Any]:
    """Run one runtime's measurement in a fresh ``python -m exporter.benchmark`` and read its answer."""
    spec_path, out_path = tmp / f"{spec['runtime']}.json", tmp / f"{spec['runtime']}.out.json"
    spec_path.write_text(json.dumps({**spec, "out": str(out_path)}))
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"]),
           "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-m", "exporter.benchmark", str(spec_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp)
    tail: list[str] = []
    reader = threading.Thread(target=lambda: tail.extend(proc.stderr.read().splitlines()[-20:]), daemon=True)
    reader.start()
    for line in proc.stdout:
        stage, _, fraction = line.strip().rpartition(" ")
        try:
            progress(stage, float(fraction))
        except ValueError:
            continue
    proc.wait()
    reader.join(timeout=5)
    try:
        answer = json.loads(out_path.read_text())
    except (OSError, ValueError):
        why = next((ln for ln in reversed(tail) if ln.strip()), f"it exited with {proc.returncode}")
        if proc.returncode in (-9, 137):
            why = "it was killed (out of memory?)"
        raise ExportError(f"The {spec['runtime']} measurement process failed: {why}", stage="benchmark") from None
    if "error" in answer:
        raise ExportError(f"The {spec['runtime']} measurement failed: {answer['error']}", stage="benchmark")
    return answer


def deploy_check(workspace: Any, store: Any, record: Any, threads: int) -> dict[str, Any]:
    """Validate (and evaluate, when the export was evaluated) the file as deployed, when its deployed
    runtime computes at another precision than validation ran at."""
    from exporter.formats import get_format
    from exporter.formats.registry import MIN_AGREEMENT
    from exporter.pipeline import recheck

    deployed = get_format(record.format).deploy(store.export_dir(record.id) / str(record.output_file),
                                                record.model.model_dump(), record.options, threads)
    precision = deployed.settings["precision"]
    try:
        report, evaluated = recheck(workspace, store, record, deployed.runner, tolerance=deployed.tolerance,
                                    min_agreement=MIN_AGREEMENT, runtime=f"{record.format} at {precision}")
    finally:
        deployed.runner.close()
    check: dict[str, Any] = {"precision": precision, "validation": {
        "verdict": report.verdict, "max_diff": report.max_diff, "tolerance": report.tolerance,
        "task_metrics": report.task_metrics, "messages": report.messages}}
    if evaluated:
        check["evaluation"] = {k: evaluated.get(k) for k in ("status", "verdict", "reason", "primary_metric", "pytorch",
                                                             "file", "delta", "drop", "max_metric_drop", "error")}
    return check


# ---------------------------------------------------------------- in the child process


def _child_main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    say = lambda stage, f: print(f"{stage} {f:.3f}", flush=True)  # noqa: E731
    try:
        answer = _child_measure(spec, say)
    except Exception as exc:  # noqa: BLE001 - the parent turns this into a typed error
        answer = {"error": one_line(exc)}
    Path(spec["out"]).write_text(json.dumps(answer))


def _child_measure(spec: dict[str, Any], say: Progress) -> dict[str, Any]:
    import numpy as np
    import psutil

    from exporter.store import find_export
    from exporter.workspace import Workspace

    threads = int(spec["threads"])
    store, record = find_export(Workspace(spec["workspace"]), spec["export_id"])
    pool = np.load(spec["inputs"])
    from exporter.formats import get_format

    fmt = get_format(record.format)
    eager = spec["runtime"] == "pytorch"
    for module in (EAGER_MODULES if eager else fmt.runtime_modules):  # imports are not the model's load or memory
        importlib.import_module(module)
    sampler = _PeakRss(psutil.Process())
    say("load", 0.0)
    started = time.perf_counter()
    if eager:
        runner, settings = _eager(store, record, threads, spec.get("device") or "cpu")
        differs = False
    else:
        deployed = fmt.deploy(store.export_dir(record.id) / str(record.output_file), record.model.model_dump(),
                              record.options, threads)
        runner, settings, differs = deployed.runner, deployed.settings, deployed.differs_from_validation
    load_s = time.perf_counter() - started
    input_name = record.model.inputs[0].name
    started = time.perf_counter()
    runner.run({input_name: pool[:spec["batch_sizes"][0]]})
    first_s = time.perf_counter() - started
    batches, sizes = [], spec["batch_sizes"]
    for k, size in enumerate(sizes):
        say(f"batch {size}", (k + 0.1) / len(sizes))
        batches.append(time_runs(lambda x: runner.run({input_name: x}), pool[:size], float(spec["seconds"])))
    runner.close()
    return {"settings": settings, "load_s": round(load_s, 4), "first_inference_s": round(first_s, 4),
            "peak_rss_growth_mb": sampler.stop(), "batches": batches, "differs_from_validation": differs,
            "gpu": settings.get("gpu")}


def time_runs(run: Callable[[Any], Any], x: Any, seconds: float,
              clock: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """Warm up, then time ``run(x)`` until ``seconds`` have passed (``MIN_RUNS``..``MAX_RUNS`` runs),
    read on ``clock`` (seconds)."""
    import numpy as np

    for _ in range(WARMUP_RUNS):
        run(x)
    latencies: list[float] = []
    began = clock()
    while len(latencies) < MAX_RUNS and (len(latencies) < MIN_RUNS or clock() - began < seconds):
        t0 = clock()
        run(x)
        latencies.append((clock() - t0) * 1e3)
    ms = np.asarray(latencies)
    keep = ms[np.linspace(0, len(ms) - 1, min(len(ms), KEEP_LATENCIES)).round().astype(int)]
    return {"batch": int(len(x)), "runs": len(ms), "p50_ms": round(float(np.percentile(ms, 50)), 4),
            "p90_ms": round(float(np.percentile(ms, 90)), 4), "p99_ms": round(float(np.percentile(ms, 99)), 4),
            "mean_ms": round(float(ms.mean()), 4), "min_ms": round(float(ms.min()), 4),
            "throughput_ips": round(len(x) * len(ms) / (ms.sum() / 1e3), 3),
            "latencies_ms": [round(float(v), 4) for v in keep]}


def _eager(store: Any, record: Any, threads: int, device: str) -> tuple[Any, dict[str, Any]]:
    """PyTorch eager on the export's checkpoint, wrapped as the export was (same outputs), on the
    device the file ran on."""
    import torch

    from exporter.checkpoint import load_checkpoint
    from exporter.formats import TorchRunner
    from exporter.pipeline import build_wrapped

    torch.set_num_threads(threads)
    project = store.project
    experiment = project.experiment(record.experiment_id)
    _, module = build_wrapped(load_checkpoint(experiment.checkpoint(record.checkpoint).path), experiment,
                              project.task, record.options)
    return TorchRunner(module, device), {"runtime": f"torch {torch.__version__} eager", "device": device,
                                         "mode": "inference_mode", "threads": torch.get_num_threads(),
                                         "precision": "fp32"}


class _PeakRss:
    """The largest resident size of this process from now until ``stop``, above its size now (in MB).

    Sampled every 2 ms, and checked against the kernel's high-water mark where that rose past
    its value at the start (so a short spike between samples is not missed).
    """

    def __init__(self, process: Any) -> None:
        import resource

        self.process, self.base = process, process.memory_info().rss
        self.peak, self.done = self.base, threading.Event()
        self.hwm0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while not self.done.wait(0.002):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def stop(self) -> float:
        import resource

        self.done.set()
        self.thread.join()
        hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        peak = max(self.peak, hwm) if hwm > self.hwm0 else self.peak
        return round((peak - self.base) / 2**20, 1)


if __name__ == "__main__":
    _child_main(sys.argv[1])
