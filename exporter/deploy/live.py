"""A bundle's server started on this machine: ``serve`` (CLI), Try it live (dashboard, API), the load test.

The server bundle is written to a scratch folder and ``server.py`` runs in a child process of this interpreter
(which has every runtime the bundle pins), on 127.0.0.1 and a free port unless told otherwise. ``stop`` ends it
(by its pid) and removes the folder.
"""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporter.errors import ExporterError

if TYPE_CHECKING:
    from exporter.workspace import Workspace

READY_TIMEOUT_S = 120.0
LOAD_CONCURRENCY = (1, 4, 16)


@dataclass
class LiveServer:
    """A running bundle server: its process, folder and address."""

    export_id: str
    model_name: str
    host: str
    port: int
    folder: Path
    process: subprocess.Popen = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def sample(self) -> bytes:
        """The bundle's golden sample image."""
        return (self.folder / "server" / "golden" / "sample.png").read_bytes()

    def predict(self, image: bytes) -> tuple[int, dict[str, Any]]:
        """``POST /predict`` with an image: the status and the JSON answer."""
        status, body, _ = _post(self.host, self.port, "/predict", image, "application/octet-stream")
        return status, json.loads(body or b"{}")

    def stop(self) -> None:
        """End the server (its own pid) and remove its folder; idempotent."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def start(workspace: Workspace, export_id: str, port: int | None = None, host: str = "127.0.0.1") -> LiveServer:
    """Write the export's server bundle and start it; returns once it answers ``/v2/health/ready``.

    Raises:
        UsageError / NotFoundError: the export cannot be served (refused target, not completed, files gone).
        ExporterError: the server did not start (its last output is in the message).
    """
    from exporter.deploy import write_bundle

    folder = Path(tempfile.mkdtemp(prefix=f"aistudio-serve-{export_id}-"))
    try:
        written = write_bundle(workspace, export_id, ["server"], folder / "bundle")
        (folder / "bundle").rename(folder / "server-bundle")
        (folder / "server-bundle" / "server").rename(folder / "server")
        port = port or free_port(host)
        log = open(folder / "server.log", "wb")  # noqa: SIM115 — the child writes to it while it runs
        process = subprocess.Popen([sys.executable, "server.py", "--port", str(port), "--host", host],
                                   cwd=folder / "server", stdout=log, stderr=subprocess.STDOUT)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    server = LiveServer(export_id, written["model_name"], host, port, folder, process)
    _wait_ready(server)
    return server


def _wait_ready(server: LiveServer) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if not server.running:
            tail = (server.folder / "server.log").read_text(errors="replace")[-800:]
            server.stop()
            raise ExporterError(f"The server of {server.export_id} stopped while starting: {tail}", stage="serve")
        try:
            if _get(server.host, server.port, "/v2/health/ready") == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    server.stop()
    raise ExporterError(f"The server of {server.export_id} did not answer within {READY_TIMEOUT_S:.0f} s.",
                        stage="serve")


def _get(host: str, port: int, path: str) -> int:
    connection = http.client.HTTPConnection(host, port, timeout=5)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    finally:
        connection.close()


def _post(host: str, port: int, path: str, body: bytes, content_type: str,
          connection: http.client.HTTPConnection | None = None) -> tuple[int, bytes, float]:
    """``(status, body, seconds)`` of one POST (on ``connection`` when given: kept alive between requests)."""
    own = connection is None
    connection = connection or http.client.HTTPConnection(host, port, timeout=60)
    try:
        started = time.perf_counter()
        connection.request("POST", path, body=body, headers={"Content-Type": content_type})
        response = connection.getresponse()
        content = response.read()
        return response.status, content, time.perf_counter() - started
    finally:
        if own:
            connection.close()


def load_test(server: LiveServer, seconds: float = 3.0, concurrency: tuple[int, ...] = LOAD_CONCURRENCY,
              max_requests: int = 5000) -> list[dict[str, Any]]:
    """``/predict`` with the golden sample from ``c`` clients at once for ``seconds`` each (at most
    ``max_requests`` per level): p50/p99 latency, requests per second, errors — per concurrency level."""
    image = server.sample()
    return [_load_level(server, image, clients, seconds, max_requests) for clients in concurrency]


def _load_level(server: LiveServer, image: bytes, clients: int, seconds: float, max_requests: int) -> dict[str, Any]:
    import numpy as np

    latencies: list[float] = []
    errors: list[int] = []
    lock, deadline = threading.Lock(), time.monotonic() + seconds

    def client() -> None:
        connection = http.client.HTTPConnection(server.host, server.port, timeout=60)
        try:
            while time.monotonic() < deadline and len(latencies) < max_requests:
                status, _, took = _post(server.host, server.port, "/predict", image, "image/png", connection)
                with lock:
                    (latencies if status == 200 else errors).append(took)
        finally:
            connection.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    ms = np.array(latencies) * 1e3
    return {"concurrency": clients, "requests": len(latencies), "errors": len(errors),
            "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
            "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None,
            "requests_per_s": len(latencies) / elapsed}
