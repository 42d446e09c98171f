"""The local runner: each job a ``python -m exporter worker`` child process of this machine, in its own process
group; its slots are file locks under the workspace (``exporter.jobs.slots``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from exporter.jobs.kinds import Job
from exporter.jobs.slots import limit_memory, process_identity, worker_alive, worker_memory_bytes
from exporter.record import Worker

if TYPE_CHECKING:
    from exporter.record import ExportRecord
    from exporter.store import ExportStore
    from exporter.workspace import Workspace

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the checkout: on the worker's PYTHONPATH


class LocalRunner:
    """Jobs as ``python -m exporter worker`` child processes, each in its own process group."""

    name = "local"

    def start(self, workspace: Workspace, store: ExportStore, job: Job) -> None:
        """Spawn the worker and record its ``{"pid", "create_time"}``."""
        from exporter.store import WORKER_LOG

        log = open(store.export_dir(job.export_id) / WORKER_LOG, "ab")  # noqa: SIM115 - owned by child
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT),
                                                                         os.environ.get("PYTHONPATH")]))}
        proc = subprocess.Popen(
            [sys.executable, "-m", "exporter", "worker", "--workspace", str(workspace.root), *job.argv()],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env,
            preexec_fn=limit_memory(worker_memory_bytes()))
        log.close()
        # Reap the child when it ends so it never lingers as a zombie that looks alive.
        threading.Thread(target=proc.wait, daemon=True).start()
        job.record_worker(store, process_identity(proc.pid))

    def run(self, workspace: Workspace, store: ExportStore, job: Job) -> ExportRecord:
        """Run the job in this process; returns the final record."""
        return job.handle(workspace)

    def cancel(self, worker: Worker | None) -> None:
        """Kill the job's process group (the worker and anything it started)."""
        if worker_alive(worker) and worker.pid != os.getpid():
            try:
                os.killpg(worker.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def alive(self, worker: Worker | None) -> bool:
        """Whether the job's process still runs."""
        return worker_alive(worker)


LOCAL = LocalRunner()
