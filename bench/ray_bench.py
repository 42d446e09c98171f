"""The Ray runner against the local one on this machine (``python -m bench.run --only ray``; part of ``make bench``).

Eight demo exports (every demo experiment, evaluation off) started together, first through the local
runner with two worker slots, then through a two-node Ray cluster on this machine (a head and a worker
node of 1 CPU each: the same two CPUs), from a network namespace of its own (root; see
``testkit.ray_cluster``). Reports the wall time of each, Ray's per-job overhead (submit → running on a
node, the bundle's size and put, the result's size and publish, from each record's ``worker.ray``), one
export alone through each runner, and the object store's transfer rate to the other node.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

TRANSFER_MB = (64, 256)


def bench_ray(root: Path) -> dict:
    """The figures above; ``root`` gets a demo workspace."""
    from demo import build_demo
    from exporter import Workspace
    from testkit.ray_cluster import RayCluster, private_network

    build_demo(root)
    ws = Workspace(root)
    jobs = [(p.id, e.id) for p in ws.projects() for e in p.experiments()]
    saved = {k: os.environ.get(k) for k in ("AISTUDIO_RUNNER", "AISTUDIO_RAY_ADDRESS", "AISTUDIO_MAX_WORKERS")}
    os.environ.update(AISTUDIO_RUNNER="local", AISTUDIO_MAX_WORKERS="2")
    try:
        local = _run_together(ws, jobs)
        alone_local = _run_together(ws, [("demo-regression", "exp-resnet18-center")])
        with private_network():
            cluster = RayCluster().start()
            try:
                os.environ.update(AISTUDIO_RUNNER="ray", AISTUDIO_RAY_ADDRESS=cluster.address)
                on_ray = _run_together(ws, jobs)
                alone_ray = _run_together(ws, [("demo-regression", "exp-resnet18-center")])
                transfer = _transfer_rate()
            finally:
                import ray

                ray.shutdown()
                cluster.stop()
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    overhead = [r["ray"] for r in on_ray["rows"] if r.get("ray")]
    idle = alone_ray["rows"][0].get("ray") or {}
    return {"jobs": len(jobs), "cpus": 2, "local": local, "ray": on_ray,
            "alone": {"local": alone_local["wall_s"], "ray": alone_ray["wall_s"], "ray_queued_s": idle.get("queued_s"),
                      "ray_bundle_put_s": idle.get("bundle_put_s"), "ray_publish_s": idle.get("publish_s")},
            "overhead": {key: round(statistics.median(o[key] for o in overhead if key in o), 3)
                         for key in ("queued_s", "bundle_mb", "bundle_put_s", "result_mb", "publish_s")},
            "transfer": transfer}


def _run_together(ws, jobs: list[tuple[str, str]]) -> dict:
    """Start ``jobs`` at once through the current runner; wait for all; wall time and one row per export."""
    from exporter import ExportRequest
    from exporter.jobs import refresh, start_export

    started = time.perf_counter()
    ids = [start_export(ws, ExportRequest(p, e, options={"evaluate": False})).id for p, e in jobs]
    records = {}
    while len(records) < len(ids):
        time.sleep(0.25)
        for export_id in ids:
            if export_id not in records and not (record := refresh(ws, export_id)).active:
                records[export_id] = record
    wall = time.perf_counter() - started
    rows = [{"export": f"{r.project_id}/{r.experiment_id}", "status": r.status,
             "verdict": r.validation.verdict if r.validation else None, "size_mb": r.output_size_mb,
             "where": getattr(r.worker, "host", None) or "local", "ray": getattr(r.worker, "ray", None)}
            for r in records.values()]
    return {"wall_s": round(wall, 1), "rows": rows}


def _transfer_rate() -> list[dict]:
    """MB/s of ``ray.put`` here plus ``ray.get`` by a task on the worker node (the path a bundle takes)."""
    import ray

    @ray.remote(num_cpus=1, resources={"edge": 1})
    def size_of(blob: bytes) -> int:
        return len(blob)

    rows = []
    for mb in TRANSFER_MB:
        data = os.urandom(mb << 20)
        ray.get(size_of.remote(b"warm"))
        started = time.perf_counter()
        assert ray.get(size_of.remote(ray.put(data))) == len(data)
        seconds = time.perf_counter() - started
        rows.append({"mb": mb, "seconds": round(seconds, 3), "mb_per_s": round(mb / seconds, 1)})
    return rows


def ray_markdown(result: dict) -> list[str]:
    """The comparison as a table and the overhead in one paragraph."""
    o, local, on_ray = result["overhead"], result["local"], result["ray"]
    lines = [f"## Local runner vs a two-node Ray cluster on this machine ({result['jobs']} demo exports started "
             f"together, {result['cpus']} CPUs either way)", "",
             "| runner | wall (s) | completed | passed |", "|---|---|---|---|"]
    for name, run in (("local (2 worker slots)", local), ("Ray (head 1 CPU + worker node 1 CPU)", on_ray)):
        done = sum(r["status"] == "completed" for r in run["rows"])
        passed = sum(r["verdict"] == "passed" for r in run["rows"])
        lines.append(f"| {name} | {run['wall_s']} | {done} | {passed} |")
    alone = result["alone"]
    lines += ["", f"One export alone (demo regression): local {alone['local']} s (a new worker process: Python and "
              f"torch imported again), Ray {alone['ray']} s (a warm Ray worker), of which submit → running on the "
              f"idle node {alone['ray_queued_s']} s, bundle put {alone['ray_bundle_put_s']} s, publish "
              f"{alone['ray_publish_s']} s. Per Ray job of the eight (medians): submit → running on a node "
              f"{o['queued_s']} s "
              f"(includes waiting for a free CPU when 8 jobs share 2), bundle {o['bundle_mb']} MB put in "
              f"{o['bundle_put_s']} s, result {o['result_mb']} MB published in {o['publish_s']} s.", "",
              "Object store to the other node: " + ", ".join(f"{t['mb']} MB in {t['seconds']} s ({t['mb_per_s']} MB/s)"
                                                             for t in result["transfer"]) + "."]
    return lines
