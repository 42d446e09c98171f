"""Jobs on a Ray cluster (``AISTUDIO_RUNNER=ray``, ``AISTUDIO_RAY_ADDRESS``): the only module that imports Ray.

**Stateless workers, one owner.** The process that submits a job (the dashboard's server, or the CLI
waiting for its export) owns the workspace. It packs what the job reads — ``project.json``, the
experiment's ``experiment.json`` and the one checkpoint, ``data/samples``, ``data/val`` when the job
evaluates, and the export's folder — into one object in Ray's object store; a Ray task unpacks it into a
scratch workspace on whichever node Ray picks, runs there exactly what a local worker runs
(``Job.handle``, with the local runner), and streams back: where it runs, the record's
progress (every 0.5 s while it changes), then the export's folder. The owner publishes the files and the
record's fields into the workspace as a local job would have written them (files first, primary file
last, under the project's lock); the record's ``worker`` names the Ray node, its host and resources.

**Resources.** Each job asks for 1 CPU and memory from the checkpoint's size (``1 GiB + 6 ×`` the file:
a 1 GB checkpoint is not packed four to a small node), one GPU for TensorRT, and ``{target: 1}`` when the
``target`` option names a custom resource. A job no alive node could ever hold is refused at submit with
the reason ("no node offers gpu:H100"), never left pending.

**Faults.** A node or worker process that dies mid-job ends the record ``failed`` with
``error.type = "Interrupted"`` naming the node — not retried: the user sees what happened and runs it again
(``max_retries=0``). Nothing reaches the workspace before the owner publishes, so nothing partial is left.
Cancelling marks the record; the owner sees it within a second and cancels the Ray task (``force``:
its process exits). The owner is a thread of the submitting process: if that process ends, its records
are recovered at the next start as Interrupted, as for local workers.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from exporter.errors import ExportError, Interrupted, UsageError, one_line
from exporter.jobs.kinds import Benchmark, Evaluate, Export, Job, end_active
from exporter.jobs.slots import process_identity, worker_alive
from exporter.record import ExportRecord, Worker
from exporter.store import PARTIAL_DIR, RECORD_FILE, WORKER_LOG, ExportStore, utc_now

ADDRESS_ENV = "AISTUDIO_RAY_ADDRESS"
PROGRESS_EVERY_S = 0.5
GIB = 1 << 30


class RayRunner:
    """Submits jobs to the Ray cluster at ``$AISTUDIO_RAY_ADDRESS`` (``auto`` by default)."""

    name = "ray"
    _shared: RayRunner | None = None
    _guard = threading.Lock()

    @classmethod
    def shared(cls) -> RayRunner:
        """One runner (and one Ray connection) per process."""
        with cls._guard:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def __init__(self) -> None:
        self.address = os.environ.get(ADDRESS_ENV, "").strip() or "auto"
        self._connected = False
        self._lock = threading.Lock()
        self.task: Any = None  # remote_job as a Ray remote function, made once connected

    def connect(self) -> Any:
        """``ray`` connected to the cluster, with this package shipped to its workers.

        Raises:
            UsageError: no cluster at the address, with what to do.
        """
        import ray

        with self._lock:
            if not self._connected:
                import exporter

                try:
                    ray.init(address=self.address, logging_level="ERROR", log_to_driver=False,
                             runtime_env={"py_modules": [str(Path(exporter.__file__).parent)],
                                          "env_vars": {"AISTUDIO_RUNNER": "local"}})
                except Exception as exc:  # noqa: BLE001 - a cluster that is not there
                    raise UsageError(f"No Ray cluster at {ADDRESS_ENV}={self.address} ({one_line(exc, 200)}): start "
                                     "one with `ray start --head` (docs/cluster.md) or unset "
                                     "AISTUDIO_RUNNER to run jobs on this machine.") from None
                self.task = ray.remote(remote_job)
                self._connected = True
        return ray

    # -- submit ---------------------------------------------------------------------------------------------
    def check(self, format_name: str, options: dict[str, Any], checkpoint: Path) -> None:
        """Refuse a job no alive node could ever hold (called before its record is written).

        Raises:
            UsageError: with what is missing ("no node offers gpu:H100").
        """
        feasible(self.connect().nodes(), job_resources(format_name, options, checkpoint))

    def start(self, workspace: Any, store: ExportStore, job: Job) -> None:
        """Submit the job, record its worker, and follow it from a thread of this process."""
        owned = _Owned(self, workspace, store, job)
        owned.submit()
        threading.Thread(target=owned.follow, name=f"ray-{job.export_id}", daemon=True).start()

    def run(self, workspace: Any, store: ExportStore, job: Job) -> ExportRecord:
        """Submit the job and follow it here to the end; returns the final record."""
        owned = _Owned(self, workspace, store, job)
        owned.submit()
        owned.follow()
        return store.get(job.export_id)

    def cancel(self, worker: Any) -> None:
        """Nothing to kill from here: the owner sees the record end and cancels its Ray task."""

    def alive(self, worker: Worker | None) -> bool:
        """Whether the job's owner (the process following it) still runs."""
        return worker_alive(worker)


def job_resources(format_name: str, options: dict[str, Any], checkpoint: Path) -> dict[str, float]:
    """What one job asks Ray for: ``CPU``, ``memory`` (bytes), ``GPU`` for TensorRT, ``target``'s resource."""
    size = checkpoint.stat().st_size if checkpoint.is_file() else 0
    wanted = {"CPU": 1.0, "memory": float(GIB + 6 * size)}
    from exporter.formats import get_format

    if get_format(format_name, require_available=False).needs_gpu:
        wanted["GPU"] = 1.0
    if options.get("target"):
        wanted[str(options["target"])] = 1.0
    return wanted


def feasible(nodes: list[dict[str, Any]], wanted: dict[str, float]) -> None:
    """Raise unless one alive node offers every resource in ``wanted`` (in total, busy or not).

    Raises:
        UsageError: naming what no node offers, or the closest shortfall.
    """
    alive = [n for n in nodes if n.get("Alive")]
    if any(all(n["Resources"].get(k, 0) >= v for k, v in wanted.items()) for n in alive):
        return
    missing = [k for k in wanted if not any(k in n["Resources"] for n in alive)]
    if missing:
        raise UsageError(f"no node offers {', '.join(missing)}: no alive node of the Ray cluster has that resource "
                         f"(add one: ray start --address=… --resources='{{\"{missing[0]}\": 1}}')")
    need = ", ".join(f"{k} {_amount(k, v)}" for k, v in wanted.items())
    offers = "; ".join(", ".join(f"{k} {_amount(k, v)}" for k, v in n["Resources"].items() if k in wanted)
                       for n in alive)
    raise UsageError(f"no single node offers {need} (nodes offer: {offers})")


def _amount(key: str, value: float) -> str:
    return f"{value / GIB:.1f} GiB" if key == "memory" else f"{value:g}"


class _Owned:
    """One job on the cluster, seen from its owner: the bundle, the task, and what comes back."""

    def __init__(self, runner: RayRunner, workspace: Any, store: ExportStore, job: Job) -> None:
        self.runner, self.workspace, self.store, self.job = runner, workspace, store, job
        self.export_id = job.export_id
        self.generator = None
        self.node: dict[str, Any] = {}
        self.worker: dict[str, Any] = {}
        self.timings: dict[str, float] = {}  # what Ray adds: the bundle, its put, the queue, the result

    def submit(self) -> None:
        ray = self.runner.connect()
        record = self.store.get(self.export_id)
        experiment = self.store.project.experiment(record.experiment_id)
        checkpoint = experiment.checkpoint(record.checkpoint).path
        wanted = job_resources(record.format, record.options, checkpoint)
        feasible(ray.nodes(), wanted)
        started = time.time()
        data = pack(self.workspace.root, self._paths(record, experiment.path, checkpoint))
        bundle = ray.put(data)
        self.timings = {"submitted_at": started, "bundle_mb": round(len(data) / 1e6, 3),
                        "bundle_put_s": round(time.time() - started, 3)}
        del data
        custom = {k: v for k, v in wanted.items() if k not in ("CPU", "memory", "GPU")}
        task = self.runner.task.options(num_returns="streaming", max_retries=0, num_cpus=wanted["CPU"],
                                        memory=wanted["memory"], num_gpus=wanted.get("GPU", 0),
                                        resources=custom or None)
        self.generator = task.remote(bundle, self.job)
        self.worker = {**process_identity(os.getpid()), "runner": "ray", "resources": wanted, "ray": self.timings}
        self.job.record_worker(self.store, self.worker)

    def _paths(self, record: ExportRecord, experiment: Path, checkpoint: Path) -> list[Path]:
        """The files the job reads, under the workspace root."""
        project = self.store.project.path
        paths = [project / "project.json", experiment / "experiment.json", checkpoint, project / "data" / "samples",
                 self.store.export_dir(self.export_id)]
        evaluates = isinstance(self.job, Evaluate) or (isinstance(self.job, Export) and record.options.get("evaluate"))
        if evaluates or record.options.get("accuracy") == "auto":
            paths.append(project / "data" / "val")
        return [p for p in paths if p.exists()]

    # -- follow -----------------------------------------------------------------------------------------------
    def follow(self) -> None:
        """Take what the task streams back until it ends; never raises (a failure ends the record)."""
        ray = self.runner.connect()
        try:
            while True:
                ready, _ = ray.wait([self.generator], timeout=1.0)
                if self._cancelled():
                    ray.cancel(self.generator, force=True)
                    return
                if not ready:
                    continue
                try:
                    item = ray.get(next(self.generator))
                except StopIteration:
                    return
                if "node" in item:
                    self._on_node(ray, item["node"])
                elif "progress" in item:
                    self._on_progress(item["progress"])
                else:
                    self._publish(item["folder"])
                    return
        except Exception as exc:  # noqa: BLE001 - the node, the worker or the object store went away
            if not self._cancelled():
                self._interrupted(exc)

    def _cancelled(self) -> bool:
        """The owner's record says the job is over (cancelled, deleted), or its benchmark entry is gone."""
        try:
            return not self.job.still_running(self.store.get(self.export_id))
        except ExportError:
            return True

    def _on_node(self, ray: Any, node: dict[str, Any]) -> None:
        offered = next((n["Resources"] for n in ray.nodes() if n["NodeID"] == node["node_id"]), {})
        self.node = node
        started = node.pop("started_at")
        self.timings["queued_s"] = round(started - self.timings["submitted_at"], 3)  # submit → running on the node
        self.worker = {**self.worker, **node, "node_resources": offered, "ray": self.timings}
        self.job.record_worker(self.store, self.worker)

    def _on_progress(self, progress: dict[str, Any]) -> None:
        with self.store.lock():
            if isinstance(self.job, Export) and self.store.get(self.export_id).active:
                self.store.update(self.export_id, **progress)

    def _publish(self, folder: bytes) -> None:
        """Unpack the export's folder beside it, move its files in (data files first, primary last), then write
        the record's fields — under the lock, and only while the owner's record still expects them."""
        if self._cancelled():
            return
        started = time.time()
        self.timings.update(result_mb=round(len(folder) / 1e6, 3))
        target = self.store.export_dir(self.export_id)
        scratch = target / PARTIAL_DIR
        shutil.rmtree(scratch, ignore_errors=True)
        unpack(folder, scratch)
        try:
            remote = json.loads((scratch / RECORD_FILE).read_text())
            with self.store.lock():
                if self._cancelled():
                    return
                self.timings["publish_s"] = round(time.time() - started, 3)  # unpacked, about to move in
                fields = self._fields(remote)
                moved = [p for p in scratch.iterdir() if p.name not in (RECORD_FILE, WORKER_LOG)]
                primary = remote.get("output_file") if isinstance(self.job, Export) else None
                for path in sorted(moved, key=lambda p: p.name == primary):
                    destination = target / path.name
                    if destination.is_dir():
                        shutil.rmtree(destination)
                    os.replace(path, destination)
                self.store.update(self.export_id, **fields)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _fields(self, remote: dict[str, Any]) -> dict[str, Any]:
        """The fields of the remote record this job owns, with ``worker`` naming the Ray node."""
        if isinstance(self.job, Benchmark):
            entry = self.job.entry
            done = next(({**b, "worker": self.worker} for b in remote.get("benchmarks", []) if b["id"] == entry), None)
            return {"benchmarks": [done if b.id == entry and done else b.model_dump(mode="json")
                                   for b in self.store.get(self.export_id).benchmarks]}
        if part := self.job.part:
            return {part: {**(remote.get(part) or {}), "worker": self.worker}}
        skip = {"id", "project_id", "experiment_id", "checkpoint", "checkpoint_path", "created_at", "format",
                "options", "schema_version", "worker", "outcome"}  # the outcome: the owner's store writes it
        fields = {k: v for k, v in remote.items() if k not in skip}
        fields["benchmarks"] = [{**b, "worker": self.worker} for b in remote.get("benchmarks", [])]
        return {**fields, "worker": self.worker}

    def _interrupted(self, exc: BaseException) -> None:
        from exporter.benchmark import update_entry

        where = (f"the Ray node {self.node.get('host')} ({self.node.get('node_ip')}, node "
                 f"{str(self.node.get('node_id'))[:12]})" if self.node else "its Ray worker")
        error = Interrupted(f"The job stopped on {where} before it finished ({type(exc).__name__}: "
                            f"{one_line(exc, 160)}); run it again.", stage="worker")
        if isinstance(self.job, Benchmark):
            update_entry(self.store, self.export_id, self.job.entry, status="failed",
                         error={**error.to_dict(), "stage": "benchmark"}, finished_at=utc_now())
        elif self.job.part:
            self.store.update(self.export_id, **{self.job.part: {"status": "failed", "error": error.to_dict(),
                                                                 "worker": self.worker}})
        else:
            end_active(self.store, self.store.get(self.export_id), "failed", error)


# -- on the worker node ---------------------------------------------------------------------------------------
def remote_job(bundle: bytes, job: Job):
    """The Ray task: unpack the bundle into a scratch workspace, say where it runs, run the job there while
    streaming the record's progress, then send back the export's folder."""
    import ray

    from exporter.workspace import Workspace

    root = Path(tempfile.mkdtemp(prefix="aistudio-ray-job-"))
    try:
        unpack(bundle, root)
        yield {"node": {"node_id": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(),
                        "node_ip": ray.util.get_node_ip_address(), "task_pid": os.getpid(),
                        "started_at": time.time()}}
        workspace = Workspace(root)
        record_path = root / "projects" / job.project_id / "exports" / job.export_id / RECORD_FILE
        thread = threading.Thread(target=job.handle, args=(workspace,), daemon=True)
        thread.start()
        last = None
        while thread.is_alive():
            thread.join(PROGRESS_EVERY_S)
            progress = _progress(record_path) if isinstance(job, Export) else None
            if progress and progress != last:
                last = progress
                yield {"progress": progress}
        yield {"folder": pack(record_path.parent, [record_path.parent], inside=True)}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _progress(record_path: Path) -> dict[str, Any] | None:
    """What the owner's record shows while an export runs (never its end: that comes with the files)."""
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        return None
    if record.get("status") not in ("pending", "running"):
        return None
    return {k: record[k] for k in ("status", "started_at", "progress", "timings_s", "checkpoint_sha256")
            if record.get(k) is not None}


# -- bundles ---------------------------------------------------------------------------------------------------
def pack(root: Path, paths: list[Path], inside: bool = False) -> bytes:
    """An uncompressed tar of ``paths`` (files or folders) named relative to ``root`` (``inside``: the folder's
    contents at the top)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in paths:
            if inside:
                for child in sorted(path.iterdir()):
                    if child.name != PARTIAL_DIR:
                        tar.add(child, arcname=child.name)
            elif not path.is_relative_to(root):
                raise UsageError(f"{path} is outside the workspace {root}: the Ray runner sends workspace files only; "
                                 "import the checkpoint (python -m exporter import) so it lives in the workspace.")
            else:
                tar.add(path, arcname=str(path.relative_to(root)))
    return buffer.getvalue()


def unpack(data: bytes, root: Path) -> None:
    """Extract a bundle made by ``pack`` (members may not leave ``root``)."""
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        tar.extractall(root, filter="data")
