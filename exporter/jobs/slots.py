"""Worker processes and the slots they hold: how many jobs run at once, whether one still runs, and which
runner runs them (``$AISTUDIO_RUNNER``, with the option it adds).

The slots are file locks under the workspace, so the limit holds across the server, CLI runs
and worker processes alike, and a killed process frees its slot at once.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

from exporter.errors import InvalidOptionError
from exporter.options import OptionSpec
from exporter.record import Worker

MAX_WORKERS_ENV = "AISTUDIO_MAX_WORKERS"
MEMORY_ENV = "AISTUDIO_WORKER_MEMORY_MB"
RUNNER_ENV = "AISTUDIO_RUNNER"
RUNNERS = ("local", "ray")


def runner_name() -> str:
    """``$AISTUDIO_RUNNER``: ``local`` (the default) or ``ray``.

    Raises:
        InvalidOptionError: any other value.
    """
    name = os.environ.get(RUNNER_ENV, "").strip().lower() or "local"
    if name not in RUNNERS:
        raise InvalidOptionError(f"{RUNNER_ENV}={name!r} is not a runner; use one of {', '.join(RUNNERS)}.")
    return name


TARGET_OPTION = OptionSpec(
    "target", "text", None, "Ray only: run on nodes that offer this custom resource (e.g. gpu:H200, edge); "
    "started with ray start --resources='{\"NAME\": 1}'.", label="Run on Ray nodes offering",
    placeholder="any node")


def runner_options() -> tuple[OptionSpec, ...]:
    """Options the runner adds to every export: ``target`` with Ray, none locally."""
    return (TARGET_OPTION,) if runner_name() == "ray" else ()


def check_target(options: dict[str, Any]) -> None:
    """The ``target`` option pins a job to Ray nodes offering that custom resource.

    Raises:
        InvalidOptionError: ``target`` given while jobs run locally.
    """
    if options.get("target") and runner_name() != "ray":
        raise InvalidOptionError(f"target={options['target']} pins a job to Ray nodes offering that resource; it needs "
                                 f"{RUNNER_ENV}=ray (jobs run on this machine now).")


def max_workers() -> int:
    """How many exports may run at once (``$AISTUDIO_MAX_WORKERS``, default: CPU count)."""
    try:
        return max(1, int(os.environ.get(MAX_WORKERS_ENV, "")))
    except ValueError:
        return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def worker_slot(root: Path, poll_s: float = 0.2, exclusive: bool = False):
    """Hold one of ``max_workers()`` slot locks for the duration of a job (``exclusive``: all of them).

    The slots are file locks under the workspace, so the limit holds across the server, CLI
    runs and worker processes alike, and a killed process frees its slot at once. An exclusive
    job (a benchmark, which must have the machine to itself) first takes the gate lock, then every
    slot as the jobs holding them end; while the gate is held, other jobs wait before taking a slot,
    so a benchmark is not starved by a stream of exports.
    """
    from filelock import FileLock, Timeout

    folder = root / ".export-slots"
    folder.mkdir(parents=True, exist_ok=True)
    gate = FileLock(str(folder / "exclusive.lock"), thread_local=False)
    slots = [FileLock(str(folder / f"slot-{i}.lock"), thread_local=False) for i in range(max_workers())]
    if exclusive:
        with gate.acquire(poll_interval=poll_s):
            held = []
            try:
                for lock in slots:
                    lock.acquire(poll_interval=poll_s)
                    held.append(lock)
                yield -1
            finally:
                for lock in held:
                    lock.release()
        return
    while True:
        try:
            gate.acquire(timeout=0)  # free: no exclusive job is waiting or running
            gate.release()
        except Timeout:
            time.sleep(poll_s)
            continue
        for index, lock in enumerate(slots):
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue
            try:
                yield index
            finally:
                lock.release()
            return
        time.sleep(poll_s)


def process_identity(pid: int) -> dict[str, Any]:
    """``{"pid", "create_time"}`` of a live process (create_time guards against pid reuse)."""
    import psutil

    try:
        return {"pid": pid, "create_time": psutil.Process(pid).create_time()}
    except psutil.Error:
        return {"pid": pid, "create_time": None}


def worker_alive(worker: Worker | None) -> bool:
    """True when the process recorded in ``worker`` still runs (and is the same process)."""
    import psutil

    if worker is None or not isinstance(worker.pid, int):
        return False
    try:
        proc = psutil.Process(worker.pid)
        same = worker.create_time in (None, proc.create_time())
        return same and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def worker_memory_bytes() -> int:
    """Memory a worker may allocate: ``$AISTUDIO_WORKER_MEMORY_MB``, default 80 % of the machine."""
    import psutil

    try:
        return int(float(os.environ[MEMORY_ENV]) * 2**20)
    except (KeyError, ValueError):
        return int(psutil.virtual_memory().total * 0.8)


def limit_memory(limit: int):
    """A ``preexec_fn`` that caps the child's data segment at ``limit`` bytes."""
    def apply() -> None:  # runs in the child before exec: only the worker is limited
        import resource

        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))

    return apply
