"""A bundle's server started on this machine: ``serve`` (CLI), Try it live (dashboard, API), the load test.

The server bundle is written to a scratch folder and ``server.py`` runs in a child process of this interpreter
(which has every runtime the bundle pins), on 127.0.0.1 and a free port unless told otherwise. ``stop`` ends it
(by its pid) and removes the folder.
"""

from __future__ import annotations

import atexit
import functools
import http.client
import io
import json
import os
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
    from exporter.record import ExportRecord
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
        process = subprocess.Popen([sys.executable, "server.py", "--port", str(port), "--host", host,
                                    "--exit-with", str(os.getpid())],
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
          connection: http.client.HTTPConnection | None = None,
          headers: dict[str, str] | None = None) -> tuple[int, bytes, float]:
    """``(status, body, seconds)`` of one POST (on ``connection`` when given: kept alive between requests)."""
    own = connection is None
    connection = connection or http.client.HTTPConnection(host, port, timeout=60)
    try:
        started = time.perf_counter()
        connection.request("POST", path, body=body, headers={"Content-Type": content_type, **(headers or {})})
        response = connection.getresponse()
        content = response.read()
        return response.status, content, time.perf_counter() - started
    finally:
        if own:
            connection.close()


def load_test(server: LiveServer, seconds: float = 3.0, concurrency: tuple[int, ...] = LOAD_CONCURRENCY,
              max_requests: int = 5000, endpoint: str = "predict") -> list[dict[str, Any]]:
    """Requests from ``c`` clients at once for ``seconds`` each (at most ``max_requests`` per level): p50/p99
    latency, requests per second, errors — per concurrency level. ``endpoint``: ``predict`` (the golden sample
    image, decoded and answered in the task's terms) or ``infer`` (one golden input as a binary tensor over the
    Open Inference Protocol: the file and the protocol alone)."""
    request = _infer_request(server) if endpoint == "infer" else ("/predict", server.sample(), {})
    return [{**_load_level(server, request, clients, seconds, max_requests), "endpoint": endpoint}
            for clients in concurrency]


def _infer_request(server: LiveServer) -> tuple[str, bytes, dict[str, str]]:
    import numpy as np

    folder = server.folder / "server"
    meta = json.loads((folder / "model.json").read_text())
    x = np.ascontiguousarray(np.load(folder / "golden" / "inputs.npy")[:1 if meta["max_batch_size"] else None])
    header = json.dumps({"inputs": [{"name": meta["inputs"][0]["name"], "shape": list(x.shape), "datatype": "FP32",
                                     "parameters": {"binary_data_size": x.nbytes}}],
                         "parameters": {"binary_data_output": True}}).encode()
    return (f"/v2/models/{meta['name']}/infer", header + x.tobytes(),
            {"Inference-Header-Content-Length": str(len(header))})


def _load_level(server: LiveServer, request: tuple[str, bytes, dict[str, str]], clients: int, seconds: float,
                max_requests: int) -> dict[str, Any]:
    import numpy as np

    path, body, headers = request
    latencies: list[float] = []
    errors: list[float] = []
    lock, deadline = threading.Lock(), time.monotonic() + seconds

    def client() -> None:
        connection = http.client.HTTPConnection(server.host, server.port, timeout=60)
        try:
            while time.monotonic() < deadline and len(latencies) < max_requests:
                status, _, took = _post(server.host, server.port, path, body, "application/octet-stream",
                                        connection, headers)
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


# -- servers this process keeps running (the dashboard's Try it live; they end with it) ---------------------------

_RUNNING: dict[str, LiveServer] = {}
_GUARD = threading.Lock()


def running(export_id: str) -> LiveServer | None:
    """The live server of ``export_id`` this process started, if it still runs."""
    server = _RUNNING.get(export_id)
    return server if server is not None and server.running else None


def serve_export(workspace: Workspace, export_id: str) -> LiveServer:
    """The export's live server on a free loopback port: the running one, or a new one."""
    with _GUARD:
        if (server := running(export_id)) is None:
            server = _RUNNING[export_id] = start(workspace, export_id)
        return server


def stop_serving(export_id: str) -> bool:
    """Stop the export's live server; False when none ran."""
    with _GUARD:
        server = _RUNNING.pop(export_id, None)
    if server is None:
        return False
    server.stop()
    return True


@atexit.register
def stop_all() -> None:
    """End every live server this process started (the dashboard is going away)."""
    for export_id in list(_RUNNING):
        stop_serving(export_id)


def load_test_seconds() -> float:
    """Seconds per concurrency level of the dashboard's load test (``$AISTUDIO_LOAD_TEST_SECONDS``, default 3)."""
    try:
        return max(0.1, float(os.environ.get("AISTUDIO_LOAD_TEST_SECONDS", "3")))
    except ValueError:
        return 3.0


def measure(workspace: Workspace, export_id: str, seconds: float = 3.0) -> ExportRecord:
    """Load-test the export's live server (started if needed) at concurrency 1, 4 and 16 and store the figures in
    the record (``serving``), beside the benchmark's bare p50 at batch 1 when it has one."""
    from exporter.machine import machine_stamp
    from exporter.store import find_export, utc_now

    server = serve_export(workspace, export_id)
    levels = load_test(server, seconds)
    store, record = find_export(workspace, export_id)
    benchmark = record.benchmark
    bare = benchmark.figure("file", 1, "p50_ms") if benchmark else None
    return store.update(export_id, serving={
        "measured_at": utc_now(), "seconds": seconds, "levels": levels, "bare_p50_ms": bare,
        "batching": {"server": "server.py (uvicorn, one process)", "batching": "none: one request, one run",
                     "endpoint": "POST /predict (decode, preprocess, run, answer)"},
        "machine": machine_stamp()})


def try_image(workspace: Workspace, export_id: str, image: bytes) -> dict[str, Any]:
    """An image through the live server beside PyTorch: ``/predict``'s answer, and a picture of the served file's
    tensors (asked over ``/v2``) and of PyTorch's, each drawn by the task on the image at the model's size.

    Raises:
        UsageError: not an image the server reads (its reason).
    """
    from exporter.errors import UsageError

    server = serve_export(workspace, export_id)
    status, answer = server.predict(image)
    if status != 200:
        raise UsageError(f"The server refused the image ({status}): {answer.get('error')}")
    served, reference, spec, task, calibration = _both_answers(workspace, server, image)
    picture = drawn_pair(task, spec, image, (reference, served), ("PyTorch", f"served ({server.model_name})"),
                         calibration)
    return {"predict": answer, "picture": picture}


def _both_answers(workspace: Workspace, server: LiveServer, image: bytes):
    """The served file's outputs (over the Open Inference Protocol) and PyTorch's, for the same preprocessed image."""
    import numpy as np
    import torch

    from exporter.deploy.bundle import server_module
    from exporter.tasks import get_task

    code = server_module()
    meta = json.loads((server.folder / "server" / "model.json").read_text())
    x = code.fit_batch(code.read_image(image, meta)[0], meta)
    body = {"inputs": [{"name": meta["inputs"][0]["name"], "shape": list(x.shape), "datatype": "FP32",
                        "data": x.ravel().tolist()}]}
    status, content, _ = _post(server.host, server.port, f"/v2/models/{server.model_name}/infer",
                               json.dumps(body).encode(), "application/json")
    if status != 200:
        raise ExporterError(f"The live server answered {status}: {content[:300]!r}", stage="serve")
    served = {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in json.loads(content)["outputs"]}
    spec, module, record = _pytorch(workspace, server.export_id)
    with torch.no_grad():
        outputs = module(torch.from_numpy(x))
    outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    reference = dict(zip([o["name"] for o in meta["outputs"]], [o.numpy() for o in outputs], strict=True))
    task = get_task(spec.task)
    evaluation = record.evaluation
    calibration = ((evaluation.model_extra or {}).get("calibration") if evaluation else None) or {}
    return task.split_outputs(served)[0], task.split_outputs(reference)[0], spec, task, calibration


@functools.lru_cache(maxsize=4)
def _pytorch_cached(root: str, export_id: str, checkpoint_sha256: str):
    from exporter.checkpoint import load_checkpoint
    from exporter.pipeline import build_wrapped
    from exporter.store import find_export
    from exporter.workspace import Workspace

    store, record = find_export(Workspace(root), export_id)
    experiment = store.project.experiment(record.experiment_id)
    spec, module = build_wrapped(load_checkpoint(experiment.checkpoint(record.checkpoint).path), experiment,
                                 options=record.options)
    return spec, module


def _pytorch(workspace: Workspace, export_id: str):
    """PyTorch's wrapped model of the export (cached while its checkpoint is the same), with the record."""
    from exporter.store import find_export

    _, record = find_export(workspace, export_id)
    spec, module = _pytorch_cached(str(workspace.root), export_id, record.checkpoint_sha256 or "")
    return spec, module, record


def drawn_pair(task: Any, spec: Any, image: bytes, predictions: tuple[dict, dict], titles: tuple[str, str],
               calibration: dict[str, float]) -> bytes:
    """PNG: the image at the model's size, drawn once per prediction by the task, side by side under titles
    (enlarged to about 320 px, as the gallery draws its thumbnails)."""
    from PIL import Image

    from exporter.tasks.drawing import side_by_side

    _, height, width = spec.input_size
    base = Image.open(io.BytesIO(image)).convert("RGB").resize((width, height))
    scale = max(1, 320 // max(height, width))
    buffer = io.BytesIO()
    side_by_side(task, spec, base, predictions, titles, calibration, (width * scale, height * scale)).save(
        buffer, format="PNG")
    return buffer.getvalue()
