"""A real two-node Ray cluster on this machine, for the Ray runner's tests and ``make bench``.

Ray binds to the machine's interface address, not loopback; so the cluster, and every process and thread
that talks to it, live in a network namespace of their own whose only interface is loopback
(``private_network``: ``unshare(CLONE_NEWNET)`` for the calling thread, then ``ip link set lo up``; root
only). The nodes are ``ray start --block`` processes this module starts; stopping the cluster ends those
processes and everything they started, found by parentage — never ``ray stop``, which would end every Ray
process of the machine.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

CLONE_NEWNET = 0x40000000
BIN = Path(sys.executable).parent
FAST_HEALTH_CHECKS = {"RAY_health_check_period_ms": "500", "RAY_health_check_failure_threshold": "4",
                      "RAY_health_check_initial_delay_ms": "0", "RAY_health_check_timeout_ms": "500"}
# Ray 2.60 turns token authentication on for a cluster when ~/.ray/auth_token exists (any local ray.init() writes
# one), and then clients without it are refused. These clusters live in a private network on loopback: off, always.
NO_AUTH = {"RAY_AUTH_MODE": "disabled"}


@contextlib.contextmanager
def private_network():
    """Run the calling thread (and what it starts from now on) in a new network namespace with loopback up.

    Raises:
        PermissionError: namespaces need root (CI runs as root).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    saved = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
    if libc.unshare(CLONE_NEWNET) != 0:
        os.close(saved)
        raise PermissionError(f"cannot create a network namespace: {os.strerror(ctypes.get_errno())}")
    try:
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        yield
    finally:
        libc.setns(saved, CLONE_NEWNET)
        os.close(saved)


class RayCluster:
    """A head node (1 CPU) and a worker node (1 CPU and the custom resource ``edge``), started with ``ray start``."""

    def __init__(self, worker_resources: dict[str, float] | None = None, cpus: int = 1) -> None:
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.temp = Path(tempfile.mkdtemp(prefix="ray-"))  # short: Ray's socket paths must stay under 107 chars
        self.worker_resources = worker_resources or {"edge": 1}
        self.cpus = cpus
        self.processes: dict[str, subprocess.Popen] = {}
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **FAST_HEALTH_CHECKS, **NO_AUTH}
        self.env.pop("AISTUDIO_RUNNER", None)

    def start(self) -> RayCluster:
        self.processes["head"] = self._ray_start("head", "--head", f"--port={self.port}", "--include-dashboard=false")
        self._wait_for_nodes(1)
        self.add_worker()
        return self

    def add_worker(self) -> None:
        """(Re)start the worker node and wait until the cluster has two alive nodes."""
        self.processes["worker"] = self._ray_start("worker", f"--address={self.address}",
                                                   f"--resources={json.dumps(self.worker_resources)}")
        self._wait_for_nodes(2)

    def _ray_start(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.temp / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        proc = subprocess.Popen([str(BIN / "ray"), "start", "--block", f"--num-cpus={self.cpus}",
                                 "--disable-usage-stats", f"--temp-dir={self.temp}", *args],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env,
                                start_new_session=True)
        log.close()
        return proc

    def nodes(self) -> list[dict]:
        """The alive nodes, as the cluster reports them (asked from a child process: this one stays no driver)."""
        script = (f"import json, ray; ray.init(address='{self.address}', logging_level='ERROR'); "
                  "print('NODES', json.dumps([n for n in ray.nodes() if n['Alive']]), flush=True)")
        out = subprocess.run([str(BIN / "python"), "-c", script], capture_output=True, text=True, env=self.env,
                             timeout=60)
        # Ray may print its own warnings on stdout too ("raylet has lagging heartbeats"): read the marked line.
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("NODES ")), None)
        return json.loads(line.removeprefix("NODES ")) if out.returncode == 0 and line else []

    def _wait_for_nodes(self, count: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.nodes()) >= count:
                return
            time.sleep(1)
        raise RuntimeError(f"the Ray cluster did not reach {count} nodes; see {self.temp}/*.log")

    def worker_node_id(self) -> str:
        return next(n["NodeID"] for n in self.nodes() if "edge" in n["Resources"] or
                    set(self.worker_resources) <= set(n["Resources"]))

    def kill_worker_raylet(self) -> int:
        """SIGKILL the worker node's raylet (the node dies; its workers go with it); returns its pid."""
        raylet = next(p for p in psutil.Process(self.processes["worker"].pid).children(recursive=True)
                      if p.name() == "raylet")
        raylet.kill()
        return raylet.pid

    def stop(self) -> None:
        """End every process this cluster started (and their descendants), then remove its temp folder."""
        tree = []
        for proc in self.processes.values():
            with contextlib.suppress(psutil.Error):
                tree += [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        for proc in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)  # ray start --block ends the node's processes
        _, alive = psutil.wait_procs(tree, timeout=5)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(alive, timeout=5)
        shutil.rmtree(self.temp, ignore_errors=True)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
