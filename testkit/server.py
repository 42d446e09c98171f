"""Start the real ``streamlit run streamlit_app.py`` on a free port for API and browser tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

from testkit import ROOT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_server(workspace: Path, **env: str):
    """Yield the base URL of a dashboard+API server on ``workspace``; stop it afterwards."""
    port = free_port()
    log = open(Path(workspace).parent / f"server-{port}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "AISTUDIO_WORKSPACE": str(workspace), "PYTHONPATH": str(ROOT), **env})
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(base, proc, env.get("AISTUDIO_API_TOKEN"))
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        stop_workers(Path(workspace))


def stop_workers(workspace: Path) -> None:
    """Cancel the exports still running in ``workspace``: their workers live in sessions of their own
    and would otherwise go on using the CPU after the server (and the test) is gone."""
    from exporter.jobs import ACTIVE, cancel_export
    from exporter.store import ExportStore
    from exporter.workspace import Workspace

    ws = Workspace(workspace)
    for project in ws.projects():
        for entry in ExportStore(project).list():
            if entry["status"] in ACTIVE:
                cancel_export(ws, entry["id"])


def _wait_until_up(base: str, proc: subprocess.Popen, token: str | None, timeout: float = 90) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"{base}/api/formats", headers=headers, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError("server did not come up in time")


def wait_for(client: httpx.Client, export_id: str, timeout: float = 300) -> dict:
    """Poll ``GET /api/export/{id}`` until the export leaves pending/running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = client.get(f"/api/export/{export_id}").json()
        if record["status"] not in ("pending", "running"):
            return record
        time.sleep(0.5)
    raise TimeoutError(f"{export_id} still {record['status']}")
