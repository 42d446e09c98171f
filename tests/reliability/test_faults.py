"""Fault injection: killed workers, many writers, full disks, memory limits, hostile input.

Each test injects a real fault into real processes and checks that nothing is lost: the index
stays valid JSON, earlier exports keep their files and sha256, and no partial file remains.
"""

from __future__ import annotations

import hashlib
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import httpx
import pytest
import torch

from exporter import ExportRequest, Workspace, export_checkpoint
from exporter.jobs import recover_interrupted, start_export
from exporter.store import ExportStore
from testkit.models import write_experiment
from testkit.server import running_server, wait_for
from tests.conftest import ROOT, read_index

CLS = ("demo-classification", "exp-resnet18-shapes")
SMALL = ("demo-anomaly", "exp-autoencoder")  # a 1 MB model: concurrency tests need many exports, not big ones


def file_hashes(root: Path, project_id: str) -> dict[str, str]:
    """sha256 of every model file of every completed export of a project."""
    store = ExportStore.for_project(Workspace(root), project_id)
    hashes = {}
    for record in store.records():
        for f in record.files:
            path = store.export_dir(record.id) / f.name
            hashes[f"{record.id}/{f.name}"] = hashlib.sha256(path.read_bytes()).hexdigest()
            assert hashes[f"{record.id}/{f.name}"] == f.sha256
    return hashes


@pytest.fixture
def seeded_ws(demo_ws) -> Path:
    """The demo workspace with one completed export to protect."""
    record = export_checkpoint(Workspace(demo_ws), ExportRequest(*CLS)).to_json()
    assert record["status"] == "completed"
    return demo_ws


@pytest.mark.slow
def test_sigkill_the_worker_at_random_moments(seeded_ws):
    """SIGKILL at random moments of a job's life (measured first: a warm worker starts at once): each export ends
    failed/Interrupted with nothing but its record and log, or — killed too late — completed and intact; the index
    stays one valid entry per record and no other export's file changes."""
    ws = Workspace(seeded_ws)
    store = ExportStore.for_project(ws, CLS[0])
    request = ExportRequest(*CLS, options={"input_shape": "1,3,192,192"})
    lifetimes = []  # the shortest of three: the first waits for the zygote's imports, the others are forked at once
    for _ in range(3):
        timed, started = start_export(ws, request).id, time.monotonic()
        while store.get(timed).active:
            time.sleep(0.05)
        lifetimes.append(time.monotonic() - started)
    lifetime = min(lifetimes)
    before = file_hashes(seeded_ws, CLS[0])
    rng = random.Random(7)
    outcomes = []
    for _ in range(20):
        record = start_export(ws, request).to_json()
        time.sleep(rng.uniform(0.0, 0.8 * lifetime))
        pid = store.get(record["id"]).worker.pid
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        recover_interrupted(ws)
        final = store.get(record["id"])
        outcomes.append(final.status)
        folder = seeded_ws / "projects" / CLS[0] / "exports" / record["id"]
        if final.status == "completed":  # it ended before the kill: whole, its files as recorded
            assert final.verdict == "passed" and file_hashes(seeded_ws, CLS[0]).keys() >= before.keys()
        else:
            assert final.status == "failed" and final.error.type == "Interrupted", final
            assert sorted(p.name for p in folder.iterdir()) <= ["export.json", "worker.log"]
        index = read_index(seeded_ws, CLS[0])  # valid JSON, one entry per record
        assert len({e["id"] for e in index}) == len(index) == len(list(folder.parent.glob("export-*")))
    after = file_hashes(seeded_ws, CLS[0])  # every completed export's files match their record
    assert {k: after[k] for k in before} == before
    assert outcomes.count("failed") >= 12, outcomes


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@pytest.mark.slow
def test_twelve_exports_at_once_through_api_and_cli(seeded_ws):
    before = {e["id"] for e in read_index(seeded_ws, SMALL[0])}
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AISTUDIO_WORKSPACE": str(seeded_ws)}
    with running_server(seeded_ws) as base, httpx.Client(base_url=base, timeout=60) as client:
        ids: list[str] = []
        posts = [threading.Thread(target=lambda: ids.append(
            client.post("/api/export", json={"project_id": SMALL[0], "experiment_id": SMALL[1]}).json()["id"]))
            for _ in range(8)]
        clis = [subprocess.Popen([sys.executable, "-m", "exporter", "export", "--project", SMALL[0],
                                  "--experiment", SMALL[1], "--json"], cwd=ROOT, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) for _ in range(4)]
        for t in posts:
            t.start()
        for t in posts:
            t.join()
        records = [wait_for(client, i) for i in ids]
        for proc in clis:
            out, _ = proc.communicate(timeout=600)
            assert proc.returncode == 0
            records.append(__import__("json").loads(out))
    assert len(records) == 12 and all(r["status"] == "completed" for r in records)
    index = read_index(seeded_ws, SMALL[0])
    new = {e["id"] for e in index} - before
    assert new == {r["id"] for r in records} and len(index) == len(before) + 12


def test_worker_limit_queues_exports_as_pending(seeded_ws, monkeypatch):
    monkeypatch.setenv("AISTUDIO_MAX_WORKERS", "1")
    ws = Workspace(seeded_ws)
    records = [start_export(ws, ExportRequest(*SMALL)).to_json() for _ in range(3)]
    store = ExportStore.for_project(ws, SMALL[0])
    seen_pending_while_running = False
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        states = [store.get(r["id"]).status for r in records]
        assert states.count("running") <= 1
        seen_pending_while_running |= "running" in states and "pending" in states
        if all(s == "completed" for s in states):
            break
        time.sleep(0.1)
    assert seen_pending_while_running
    assert [store.get(r["id"]).status for r in records] == ["completed"] * 3


def test_disk_full_during_export(seeded_ws):
    """The file-size limit makes writing the 45 MB model fail as a full disk would."""
    before = file_hashes(seeded_ws, CLS[0])

    def small_disk():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (8 << 20, 8 << 20))

    result = subprocess.run(
        [sys.executable, "-m", "exporter", "export", "--project", CLS[0], "--experiment", CLS[1],
         "--workspace", str(seeded_ws)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, preexec_fn=small_disk, timeout=300)
    assert result.returncode == 1
    assert "OutputFileError" in result.stderr and "larger than allowed" in result.stderr
    newest = max(read_index(seeded_ws, CLS[0]), key=lambda e: e["created_at"])
    assert newest["status"] == "failed"
    folder = seeded_ws / "projects" / CLS[0] / "exports" / newest["id"]
    assert sorted(p.name for p in folder.iterdir()) == ["export.json"]
    assert file_hashes(seeded_ws, CLS[0]) == before


def test_unwritable_exports_folder(demo_ws):
    exports = demo_ws / "projects" / CLS[0] / "exports"
    exports.write_text("not a folder")  # root ignores permissions, so block the folder itself
    from exporter.errors import OutputFileError

    with pytest.raises(OutputFileError, match="cannot be created or written"):
        export_checkpoint(Workspace(demo_ws), ExportRequest(*CLS))
    assert exports.read_text() == "not a folder"


def test_worker_over_its_memory_limit_fails_alone(demo_ws):
    with running_server(demo_ws, AISTUDIO_WORKER_MEMORY_MB="1500") as base, httpx.Client(base_url=base) as client:
        body = {"project_id": "demo-anomaly", "experiment_id": "exp-autoencoder",
                "options": {"input_shape": "1,3,4096,4096"}}
        record = wait_for(client, client.post("/api/export", json=body).json()["id"])
        assert record["status"] == "failed"
        assert record["error"]["type"] in ("ResourceLimitError", "Interrupted"), record["error"]
        assert client.get("/api/formats").status_code == 200
        ok = wait_for(client, client.post("/api/export", json={"project_id": "demo-anomaly",
                                                               "experiment_id": "exp-autoencoder"}).json()["id"])
        assert ok["status"] == "completed"


# ------------------------------------------------------------------ hostile checkpoints
class _PlantsFile:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def _zip_bomb(path: Path) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("archive/data.pkl", "w", force_zip64=True) as member:
            zeros = bytes(1 << 20)
            for _ in range(300):
                member.write(zeros)


def _plant(root: Path, name: str, marker: Path) -> None:
    import torchvision

    sd = torchvision.models.resnet18(num_classes=3).state_dict()
    path = write_experiment(root, sd, project_id="hostile", experiment_id=name,
                            hparams={"task": "classification", "architecture": "resnet18", "num_classes": 3,
                                     "input_size": [3, 32, 32]})
    if name == "zero-bytes":
        path.write_bytes(b"")
    elif name == "truncated":
        path.write_bytes(path.read_bytes()[:4096])
    elif name == "corrupt":
        data = bytearray(path.read_bytes())
        data[100:4000] = random.Random(0).randbytes(3900)
        path.write_bytes(bytes(data))
    elif name == "zip-bomb":
        _zip_bomb(path)
    elif name == "code-pickle":
        torch.save({"state_dict": sd, "payload": _PlantsFile(str(marker))}, path)
    elif name == "huge":
        with open(path, "ab") as fh:
            fh.truncate(path.stat().st_size + (300 << 20))  # sparse: 300 MB on paper
    elif name == "nan-weights":
        sd["fc.weight"][0, 0] = float("inf")
        torch.save({"state_dict": sd, "hyper_parameters": {
            "task": "classification", "architecture": "resnet18", "num_classes": 3, "input_size": [3, 32, 32]}}, path)


HOSTILE = {
    "zero-bytes": "empty (0 bytes)",
    "truncated": "truncated or corrupt",
    "corrupt": "re-save it",
    "zip-bomb": "zip bomb",
    "code-pickle": "unsupported GLOBAL posix.system",
    "huge": "over the 200 MB limit",
}


def test_hostile_checkpoints_through_the_server(seeded_ws, tmp_path):
    marker = tmp_path / "PWNED"
    for name in [*HOSTILE, "nan-weights"]:
        _plant(seeded_ws, name, marker)
    before = file_hashes(seeded_ws, CLS[0])
    with running_server(seeded_ws, AISTUDIO_MAX_CHECKPOINT_MB="200") as base, \
            httpx.Client(base_url=base, timeout=60) as client:
        for name, text in HOSTILE.items():
            response = client.post("/api/export", json={"project_id": "hostile", "experiment_id": name})
            record = wait_for(client, response.json()["id"])
            assert record["status"] == "failed", name
            assert record["error"]["type"] in ("CheckpointError", "StateDictMismatchError"), (name, record["error"])
            assert text in record["error"]["message"], (name, record["error"])
            assert client.get("/api/formats").status_code == 200
        _hostile_requests(client)
        nan = wait_for(client, client.post("/api/export", json={"project_id": "hostile",
                                                                "experiment_id": "nan-weights"}).json()["id"])
        assert nan["validation"]["verdict"] == "failed" and "NaN or Inf" in nan["validation"]["outputs"][0]["problem"]
    assert not marker.exists()
    assert file_hashes(seeded_ws, CLS[0]) == before
    for entry in read_index(seeded_ws, "hostile"):
        assert entry["status"] in ("failed", "completed")
    shutil.rmtree(seeded_ws / "projects" / "hostile")


def _hostile_requests(client: httpx.Client) -> None:
    """Absurd options, hostile ids and oversize bodies: each a clear 4xx, the server unharmed."""
    body = {"project_id": CLS[0], "experiment_id": CLS[1]}
    cases = [
        ({**body, "options": {"input_shape": [1, 3, 100000, 100000]}}, 400, "too large"),
        ({**body, "options": {"opset_version": "17; rm -rf /"}}, 400, "integer"),
        ({**body, "options": {"tolerance": -1}}, 400, "out of range"),
        ({**body, "project_id": "../../etc"}, 404, "not valid"),
        ({**body, "experiment_id": "exp\u0000x"}, 404, "not valid"),
        ({**body, "experiment_id": "ёж-😀"}, 404, "not valid"),
    ]
    for request, status, text in cases:
        response = client.post("/api/export", json=request)
        assert response.status_code == status and text in response.json()["error"]["message"], response.text
    for path in ("/api/export/..%2F..%2Fetc%2Fpasswd/download", "/api/export/export-%00aaaaaaa",
                 "/api/export/export-😀😀😀😀/download"):
        response = client.get(path)
        assert 400 <= response.status_code < 500 and b"root:" not in response.content
    huge = b'{"project_id": "' + b"a" * (4 << 20) + b'"}'
    assert client.post("/api/export", content=huge, headers={"content-type": "application/json"}).status_code == 413
    assert client.get("/api/formats").status_code == 200
