"""The local runner: each job a ``python -m exporter worker`` process of this machine, in its own process group —
forked from a warm zygote that has imported torch once (``exporter.jobs.zygote``), or spawned; its slots are file
locks under the workspace (``exporter.jobs.slots``)."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporter.jobs.kinds import Job
from exporter.jobs.slots import limit_memory, process_identity, worker_alive, worker_memory_bytes
from exporter.record import Worker

if TYPE_CHECKING:
    from exporter.record import ExportRecord
    from exporter.store import ExportStore
    from exporter.workspace import Workspace

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the checkout: on the worker's PYTHONPATH
WARM_ENV = "AISTUDIO_WARM_WORKERS"  # 0: spawn every job (no zygote)
# Read when a job runs, never at import: a zygote started under other values of these still forks the right job.
PER_JOB_PREFIXES = ("AISTUDIO_", "PYTEST_")
ZYGOTE_START_S = 300.0  # a zygote not ready by then is given up (its jobs are spawned)
OWNER = "owner"  # a recorded worker with this set is the process that will launch the job: nothing to kill there


class Zygote:
    """The owner's end of a warm zygote (``exporter.jobs.zygote``)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.lock = threading.Lock()
        self.proc = subprocess.Popen([sys.executable, "-m", "exporter.jobs.zygote"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True,
                                     env=env, text=True)
        # Its imports take what a spawned worker's would (5–7 s): no request waits for them. Jobs that come before
        # it is ready wait in the owner (``LocalRunner.start``) and are forked when it is.
        self.ready, self.failed = False, False
        threading.Thread(target=self._await_ready, daemon=True).start()

    def _await_ready(self) -> None:
        started = select.select([self.proc.stdout], [], [], ZYGOTE_START_S)[0]
        try:
            ready = bool(started) and json.loads(self.proc.stdout.readline() or "{}").get("ready", False)
        except ValueError:
            ready = False
        with self.lock:
            self.ready, self.failed = ready, not ready
        if not ready:
            self.close()

    def wait_ready(self, timeout: float) -> bool:
        """Whether the zygote is ready within ``timeout`` seconds (False: it failed, or is not ready by then)."""
        deadline = time.monotonic() + timeout
        while not (self.ready or self.failed) and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.ready

    def serves(self, env: dict[str, str]) -> bool:
        """Whether a job with this environment can be forked here (the rest only differs in what is read late)."""
        return _import_env(env) == _import_env(self.env)

    def fork(self, job: dict[str, Any]) -> int | None:
        """The pid of the forked worker, or ``None`` (the zygote is gone: spawn instead)."""
        with self.lock:
            if not self.ready or self.proc.poll() is not None:
                return None
            try:
                self.proc.stdin.write(json.dumps(job) + "\n")
                self.proc.stdin.flush()
                return int(json.loads(self.proc.stdout.readline())["pid"])
            except (OSError, ValueError, KeyError):
                self.ready = False
                return None

    def close(self) -> None:
        """End the zygote (it exits when its pipe closes); the jobs it forked run on."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        threading.Thread(target=self.proc.wait, daemon=True).start()


def _import_env(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if not k.startswith(PER_JOB_PREFIXES)}


class LocalRunner:
    """Jobs as ``python -m exporter worker`` child processes, each in its own process group."""

    name = "local"

    def __init__(self) -> None:
        self.zygote: Zygote | None = None
        self.cold = False  # a zygote failed to start here: every job is spawned
        self.lock = threading.Lock()

    def start(self, workspace: Workspace, store: ExportStore, job: Job) -> None:
        """Fork or spawn the worker and record its ``{"pid", "create_time"}``. While the zygote still imports, the
        job is this process's (recorded as its worker, as a Ray job is its owner's) and is forked once the zygote is
        ready: the caller never waits, and the imports are done once, not twice."""
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT),
                                                                         os.environ.get("PYTHONPATH")]))}
        zygote = self._zygote(env)
        if zygote and not (zygote.ready or zygote.failed):
            job.record_worker(store, {**process_identity(os.getpid()), OWNER: True})
            threading.Thread(target=self._start_when_ready, args=(zygote, workspace, store, job, env),
                             daemon=True).start()
            return
        job.record_worker(store, process_identity(self._launch(zygote, workspace, store, job, env)))

    def _start_when_ready(self, zygote: Zygote, workspace: Workspace, store: ExportStore, job: Job,
                          env: dict[str, str]) -> None:
        """Launch a job that came while the zygote imported, unless it was cancelled or deleted meanwhile; a job
        cancelled between that check and its launch is killed here (its recorded worker was this process)."""
        from exporter.errors import ExportError

        zygote.wait_ready(ZYGOTE_START_S)
        try:
            if not job.still_running(store.get(job.export_id)):
                return
        except ExportError:
            return
        pid = self._launch(zygote, workspace, store, job, env)
        if not job.record_worker(store, process_identity(pid)):
            self.cancel(Worker(**process_identity(pid)))

    def _launch(self, zygote: Zygote | None, workspace: Workspace, store: ExportStore, job: Job,
                env: dict[str, str]) -> int:
        """The pid of the job's worker: forked from ``zygote`` where it is ready, else spawned."""
        from exporter.store import WORKER_LOG

        log_path = store.export_dir(job.export_id) / WORKER_LOG
        argv = ["worker", "--workspace", str(workspace.root), *job.argv()]
        memory = worker_memory_bytes()
        pid = zygote and zygote.fork({"argv": argv, "env": env, "log": str(log_path), "cwd": os.getcwd(),
                                      "memory": memory})
        if pid:
            return pid
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "exporter", *argv], stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, env=env, preexec_fn=limit_memory(memory))
        # Reap the child when it ends so it never lingers as a zombie that looks alive.
        threading.Thread(target=proc.wait, daemon=True).start()
        return proc.pid

    def _zygote(self, env: dict[str, str]) -> Zygote | None:
        """This process's zygote for jobs in ``env``: started on the first job (which waits for its imports),
        replaced when the environment changes or it has died; ``None`` when warm workers are off, or a zygote
        could not start here."""
        if os.environ.get(WARM_ENV, "1").strip() == "0" or self.cold:
            return None
        with self.lock:
            if self.zygote and self.zygote.failed:
                self.cold = True  # its imports failed: they would fail again
                return None
            if self.zygote and (not self.zygote.serves(env) or self.zygote.proc.poll() is not None):
                self.zygote.close()
                self.zygote = None
            if self.zygote is None:
                self.zygote = Zygote(env)
            return self.zygote

    def run(self, workspace: Workspace, store: ExportStore, job: Job) -> ExportRecord:
        """Run the job in this process; returns the final record."""
        return job.handle(workspace)

    def cancel(self, worker: Worker | None) -> None:
        """Kill the job's process group (the worker and anything it started); a job not launched yet is left to
        its owner, which sees the record end and never launches it."""
        if worker_alive(worker) and worker.pid != os.getpid() and not getattr(worker, OWNER, False):
            try:
                os.killpg(worker.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def alive(self, worker: Worker | None) -> bool:
        """Whether the job's process still runs."""
        return worker_alive(worker)


LOCAL = LocalRunner()
