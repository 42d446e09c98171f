"""Serving: the demo classifier and detector served by their deploy bundles (``python -m bench.run --only serving``;
part of ``make bench``).

Per model, in one run on this machine: the file's bare benchmark (the product's benchmark job, batch 1), then its
bundle's server under load from 1, 4 and 16 clients — batching off (``server.py``: uvicorn, one process, one run
per request) on ``/predict`` (an image in, the task's answer out) and on ``/v2/.../infer`` (one binary tensor: the
file and the protocol alone), and batching on (``serve_ray.py``: Ray Serve, ``@serve.batch`` up to 8, 5 ms wait,
one replica, in a network namespace of its own). The serving overhead at concurrency 1 is the served p50 over the
bare p50; the target is at most max(2 ms, 25 %) above it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODELS = (("demo-classification", "exp-resnet18-shapes"), ("demo-detection", "exp-fasterrcnn-resnet18-fpn"))
SECONDS = 3.0
OVERHEAD_MS, OVERHEAD_SHARE = 2.0, 0.25


def bench_serving(root: Path, seconds: float = SECONDS) -> list[dict]:
    """One row per model: the bare p50 and every served level (see the module docstring)."""
    from demo import build_demo
    from exporter import ExportRequest, Workspace, export_checkpoint
    from exporter.deploy import live
    from exporter.service import benchmark_export

    build_demo(root, projects=[project for project, _ in MODELS])
    ws = Workspace(root)
    rows = []
    for project, experiment in MODELS:
        record = export_checkpoint(ws, ExportRequest(project, experiment, options={"evaluate": False}))
        bare = benchmark_export(ws, record.id, {"batch_sizes": [1], "seconds": 2.0}).benchmark
        server = live.start(ws, record.id)
        try:
            off = [*live.load_test(server, seconds), *live.load_test(server, seconds, endpoint="infer")]
        finally:
            server.stop()
        rows.append({"model": f"{project}/{experiment}", "export_id": record.id,
                     "bare_p50_ms": bare.figure("file", 1, "p50_ms"), "threads": bare.threads,
                     "batching_off": off, "batching_on": _ray_serve(ws, record.id, seconds)})
    return rows


def _ray_serve(ws, export_id: str, seconds: float) -> list[dict]:
    """The bundle's Ray Serve app (batching on), started in a network namespace of its own, under the same load."""
    from exporter.deploy import live, write_bundle
    from testkit.ray_cluster import NO_AUTH, private_network

    folder = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    written = write_bundle(ws, export_id, ["server"], folder / "bundle")
    with private_network():
        port = live.free_port()
        log = open(folder / "serve.log", "wb")  # noqa: SIM115 - the child writes to it
        process = subprocess.Popen([sys.executable, "serve_ray.py", "--port", str(port), "--max-batch", "8",
                                    "--cpus-per-replica", "0"], cwd=folder / "bundle" / "server", stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, **NO_AUTH})  # no token written into ~/.ray
        server = live.LiveServer(export_id, written["model_name"], "127.0.0.1", port, folder / "bundle", process)
        try:
            _wait(server, folder)
            return [*live.load_test(server, seconds), *live.load_test(server, seconds, endpoint="infer")]
        finally:
            _stop_ray_app(process)
            log.close()


def _wait(server, folder: Path, timeout: float = 180) -> None:
    import http.client

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.running, (folder / "serve.log").read_text()[-2000:]
        try:
            connection = http.client.HTTPConnection(server.host, server.port, timeout=5)
            connection.request("GET", "/v2/health/ready")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"Ray Serve did not answer; see {folder}/serve.log")


def _stop_ray_app(process: subprocess.Popen) -> None:
    """SIGINT: ``serve.run(blocking=True)`` shuts Serve and its local Ray down; then whatever is left of its own
    session (its pid is the session id: nothing else of the machine)."""
    import signal

    import psutil

    process.send_signal(signal.SIGINT)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
    left = [p for p in psutil.process_iter() if _session(p) == process.pid]
    for proc in left:
        proc.kill()
    psutil.wait_procs(left, timeout=10)


def _session(proc) -> int | None:
    import os

    try:
        return os.getsid(proc.pid)
    except OSError:
        return None


def serving_markdown(rows: list[dict]) -> list[str]:
    lines = ["## Serving (deploy bundles under load, this machine)", "",
             "| model | bare p50 ms | server | endpoint | clients | p50 ms | p99 ms | requests/s | errors |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        for mode in ("batching_off", "batching_on"):
            for level in row[mode]:
                server = "Ray Serve, batch ≤ 8" if mode == "batching_on" else "uvicorn, no batching"
                lines.append(f"| {row['model']} | {row['bare_p50_ms']:.2f} | {server} | "
                             f"{level['endpoint']} | {level['concurrency']} | {_ms(level['p50_ms'])} | "
                             f"{_ms(level['p99_ms'])} | {level['requests_per_s']:.1f} | {level['errors']} |")
    lines.append("")
    for row in rows:
        bare = row["bare_p50_ms"]
        for level in (lv for lv in row["batching_off"] if lv["concurrency"] == 1):
            overhead = level["p50_ms"] - bare
            allowed = max(OVERHEAD_MS, OVERHEAD_SHARE * bare)
            lines.append(f"- {row['model']}, {level['endpoint']} at concurrency 1: served p50 "
                         f"{level['p50_ms']:.2f} ms vs bare {bare:.2f} ms → overhead {overhead:+.2f} ms "
                         f"({overhead / bare:+.0%}); target ≤ "
                         f"{allowed:.2f} ms: {'met' if overhead <= allowed else 'NOT met'}")
    return lines


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"
