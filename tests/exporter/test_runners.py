"""The runner seam's choices, worked by hand: which runner, which resources a job asks for, which refusals."""

from __future__ import annotations

import os
import time

import pytest

from exporter import ExportRequest, Workspace
from exporter.errors import Cancelled, InvalidOptionError, UsageError
from exporter.jobs.cluster import GIB, feasible, job_resources
from exporter.jobs.kinds import end_active
from exporter.jobs.slots import runner_name
from exporter.request import prepare_export


def test_the_runner_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("AISTUDIO_RUNNER", raising=False)
    assert runner_name() == "local"
    monkeypatch.setenv("AISTUDIO_RUNNER", "Ray")
    assert runner_name() == "ray"
    monkeypatch.setenv("AISTUDIO_RUNNER", "kubernetes")
    with pytest.raises(InvalidOptionError, match="use one of local, ray"):
        runner_name()


def test_target_needs_the_ray_runner(demo_ws, monkeypatch):
    monkeypatch.delenv("AISTUDIO_RUNNER", raising=False)
    with pytest.raises(InvalidOptionError, match="it needs AISTUDIO_RUNNER=ray"):
        prepare_export(Workspace(demo_ws), ExportRequest("demo-classification", "exp-resnet18-shapes",
                                                         options={"target": "gpu:H200"}))
    assert not list((demo_ws / "projects/demo-classification/exports").glob("export-*"))


def test_a_job_asks_for_memory_by_checkpoint_size_a_gpu_for_tensorrt_and_its_target(tmp_path):
    checkpoint = tmp_path / "big.ckpt"
    with open(checkpoint, "wb") as fh:
        fh.truncate(10**9)  # a 1 GB checkpoint (sparse)
    assert job_resources("onnx", {}, checkpoint) == {"CPU": 1.0, "memory": GIB + 6e9}
    assert job_resources("tensorrt", {"target": "gpu:H200"}, checkpoint) == {
        "CPU": 1.0, "memory": GIB + 6e9, "GPU": 1.0, "gpu:H200": 1.0}


def test_a_job_no_alive_node_can_hold_is_refused_with_the_reason():
    nodes = [{"Alive": True, "Resources": {"CPU": 1.0, "memory": 2.0 * GIB}},
             {"Alive": True, "Resources": {"CPU": 1.0, "memory": 8.0 * GIB, "edge": 1.0}},
             {"Alive": False, "Resources": {"CPU": 8.0, "memory": 64.0 * GIB, "gpu:H100": 1.0}}]
    feasible(nodes, {"CPU": 1.0, "memory": 4.0 * GIB, "edge": 1.0})  # the second node holds it
    with pytest.raises(UsageError, match=r"^no node offers gpu:H100: no alive node"):
        feasible(nodes, {"CPU": 1.0, "memory": GIB, "gpu:H100": 1.0})  # only a dead node had it
    with pytest.raises(UsageError, match=r"^no single node offers CPU 2, memory 1\.0 GiB \(nodes offer: CPU 1, "
                                         r"memory 2\.0 GiB; CPU 1, memory 8\.0 GiB\)"):
        feasible(nodes, {"CPU": 2.0, "memory": GIB})


def test_jobs_fork_from_a_warm_zygote_in_their_own_session_and_limits(demo_ws, monkeypatch):
    """The local runner imports torch once, in a zygote, and forks each job from it (a job that comes while it
    imports is the runner's own until the zygote is ready: starting a job never waits, nor imports twice): the job is
    in its own session (cancel kills its group), under its own memory limit, logging to its own file, and ends as a
    spawned worker would; a job cancelled before its launch never starts; a change of environment that imports could
    read replaces the zygote; AISTUDIO_WARM_WORKERS=0 spawns."""
    import psutil

    from exporter.jobs.kinds import Export
    from exporter.jobs.local import OWNER, LocalRunner
    from exporter.store import WORKER_LOG, ExportStore

    ws, runner = Workspace(demo_ws), LocalRunner()
    store = ExportStore.for_project(ws, "demo-anomaly")

    def begin() -> str:
        record = prepare_export(ws, ExportRequest("demo-anomaly", "exp-autoencoder", options={"evaluate": False}))
        runner.start(ws, store, Export(record.project_id, record.id))
        return record.id

    def launched(export_id: str) -> psutil.Process:
        deadline = time.monotonic() + 300
        while getattr(worker := store.get(export_id).worker, OWNER, False) and time.monotonic() < deadline:
            time.sleep(0.05)
        return psutil.Process(worker.pid)

    def start() -> tuple[str, psutil.Process]:
        export_id = begin()
        return export_id, launched(export_id)

    monkeypatch.setenv("AISTUDIO_WORKER_MEMORY_MB", "6000")
    first = begin()  # starts the zygote: while it imports, the job is this process's
    owned = store.get(first).worker
    assert owned.pid == os.getpid() and getattr(owned, OWNER) is True
    first_worker, zygote = launched(first), runner.zygote
    monkeypatch.setenv("AISTUDIO_WORKER_MEMORY_MB", "5000")  # read per job: the same zygote forks it
    second, second_worker = start()
    cancelled, victim = start()
    for worker, limit in ((first_worker, 6000), (second_worker, 5000), (victim, 5000)):
        assert worker.ppid() == zygote.proc.pid and os.getsid(worker.pid) == worker.pid
        assert worker.rlimit(psutil.RLIMIT_DATA) == (limit << 20, limit << 20)
    log = store.export_dir(second) / WORKER_LOG
    assert [os.readlink(f"/proc/{second_worker.pid}/fd/{fd}") for fd in (1, 2)] == [str(log)] * 2
    runner.cancel(store.get(cancelled).worker)
    assert psutil.wait_procs([victim], timeout=10)[1] == []
    deadline = time.monotonic() + 300
    for export_id in (first, second):
        while store.get(export_id).active and time.monotonic() < deadline:
            time.sleep(0.5)
        assert store.get(export_id).verdict == "passed"
    assert psutil.wait_procs([first_worker, second_worker], timeout=30)[1] == []  # ended with their jobs
    threads = str(int(os.environ.get("OMP_NUM_THREADS", "1")) + 1)
    monkeypatch.setenv("OMP_NUM_THREADS", threads)  # read as torch loads: another zygote forks this one
    never = begin()  # cancelled while the new zygote imports: the runner never launches it
    runner.cancel(store.get(never).worker)  # the owner's worker: nothing to kill (this process lives on)
    end_active(store, store.get(never), "cancelled", Cancelled("Cancelled by the user."))
    changed, changed_worker = start()
    assert runner.zygote is not zygote and changed_worker.ppid() == runner.zygote.proc.pid
    assert zygote.proc.wait(timeout=10) == 0  # the old one ended when its pipe closed
    assert store.get(never).status == "cancelled" and not (store.export_dir(never) / WORKER_LOG).exists()
    monkeypatch.setenv("AISTUDIO_WARM_WORKERS", "0")
    spawned, spawned_worker = start()
    assert spawned_worker.ppid() == os.getpid()
    for export_id in (changed, spawned):
        runner.cancel(store.get(export_id).worker)
    runner.zygote.close()
