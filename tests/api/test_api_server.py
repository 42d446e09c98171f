"""The HTTP API against the real server process (``streamlit run``), with a real HTTP client."""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from testkit.server import running_server, wait_for
from tests.conftest import linked_copy, read_index
from tests.helpers import record_fields

CLS = {"project_id": "demo-classification", "experiment_id": "exp-resnet18-shapes"}


@pytest.fixture(scope="module")
def api_ws(demo_template, tmp_path_factory):
    return linked_copy(demo_template, tmp_path_factory.mktemp("api") / "ws")


@pytest.fixture(scope="module")
def client(api_ws):
    with running_server(api_ws) as base, httpx.Client(base_url=base, timeout=60) as http:
        yield http


@pytest.fixture(scope="module")
def completed(client):
    response = client.post("/api/export", json={**CLS, "checkpoint": "best", "format": "onnx", "options": {}})
    assert response.status_code == 202
    assert response.json()["status"] in ("pending", "running")
    record = wait_for(client, response.json()["id"])
    assert record["status"] == "completed" and record["validation"]["passed"], record
    return record


def test_formats_and_projects(client):
    formats = client.get("/api/formats").json()
    assert [f["name"] for f in formats] == ["onnx", "torchscript", "openvino", "tensorrt", "pt2", "executorch",
                                            "litert", "ncnn", "coreml"]
    assert formats[0]["available"] and not formats[3]["available"] and formats[3]["reason"]
    projects = client.get("/api/projects").json()
    cls = next(p for p in projects if p["id"] == "demo-classification")
    assert cls["experiments"][0]["checkpoints"][0]["name"] == "best"
    assert client.get("/api/openapi.json").json()["info"]["title"] == "AI Studio Export API"
    assert client.get("/api/docs").status_code == 200


def test_export_download_and_run(client, completed, tmp_path):
    response = client.get(f"/api/export/{completed['id']}/download")
    assert response.status_code == 200
    sha = completed["files"][0]["sha256"]
    assert hashlib.sha256(response.content).hexdigest() == sha
    assert response.headers["etag"] == f'"{sha}"'
    assert int(response.headers["content-length"]) == completed["files"][0]["size_bytes"]
    assert 'filename="model.onnx"' in response.headers["content-disposition"]
    path = tmp_path / "model.onnx"
    path.write_bytes(response.content)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"input": np.random.rand(2, 3, 64, 64).astype(np.float32)})
    assert logits.shape == (2, 3)
    listed = client.get("/api/exports", params={"project_id": "demo-classification"}).json()
    assert completed["id"] in [e["id"] for e in listed]


def test_download_resumes_with_range(client, completed):
    url = f"/api/export/{completed['id']}/download"
    size = completed["files"][0]["size_bytes"]
    first = client.get(url, headers={"Range": "bytes=0-999999"})
    assert first.status_code == 206 and len(first.content) == 1_000_000
    rest = client.get(url, headers={"Range": "bytes=1000000-"})
    assert rest.status_code == 206 and rest.headers["content-range"] == f"bytes 1000000-{size - 1}/{size}"
    assert hashlib.sha256(first.content + rest.content).hexdigest() == completed["files"][0]["sha256"]


def test_multi_file_export_downloads_as_one_zip(client, tmp_path):
    body = {**CLS, "options": {"external_data": "always"}}
    record = wait_for(client, client.post("/api/export", json=body).json()["id"])
    assert [f["name"] for f in record["files"]] == ["model.onnx", "model.onnx.data"]
    response = client.get(f"/api/export/{record['id']}/download")
    assert response.headers["content-type"] == "application/zip"
    zipfile.ZipFile(io.BytesIO(response.content)).extractall(tmp_path)
    for f in record["files"]:
        assert hashlib.sha256((tmp_path / f["name"]).read_bytes()).hexdigest() == f["sha256"]
    ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])


def test_deploy_bundle_streams_as_a_zip_with_its_start_script_executable(client, completed, tmp_path):
    response = client.post(f"/api/export/{completed['id']}/deploy", params={"target": "triton,server"})
    assert response.status_code == 200 and response.headers["content-type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    root = archive.namelist()[0].split("/")[0]
    assert response.headers["content-disposition"] == f'attachment; filename="{root}.zip"'
    names = set(archive.namelist())
    model = root.removesuffix("-deploy")
    assert {f"{root}/triton/{model}/config.pbtxt", f"{root}/triton/{model}/1/model.onnx", f"{root}/server/start.sh",
            f"{root}/server/requirements.txt", f"{root}/server/golden/inputs.npy"} <= names
    assert archive.getinfo(f"{root}/server/start.sh").external_attr >> 16 & 0o111  # still executable
    assert "torch" not in archive.read(f"{root}/server/requirements.txt").decode()
    model_json = json.loads(archive.read(f"{root}/server/model.json"))
    assert model_json["export_id"] == completed["id"] and model_json["max_batch_size"] == 8
    unknown = client.post(f"/api/export/{completed['id']}/deploy", params={"target": "k8s"})
    assert unknown.status_code == 400 and "triton, ovms, kserve, server" in unknown.json()["error"]["message"]
    missing = client.post("/api/export/export-00000000/deploy")
    assert missing.status_code == 404


@pytest.mark.parametrize("fmt", ["onnx", "openvino", "torchscript"])
def test_signed_download_verifies_and_reruns_anywhere(client, api_ws, tmp_path, fmt):
    """The download with its passport verifies with the public key the API hands out — the CLI from a folder the
    workspace knows nothing of, then ``POST /api/verify`` on the same zip staged as an upload."""
    from tests.helpers import cli

    record = wait_for(client, client.post("/api/export", json={**CLS, "format": fmt,
                                                                "options": {"evaluate": False}}).json()["id"])
    response = client.get(f"/api/export/{record['id']}/download", params={"passport": "true"})
    assert response.status_code == 200 and response.headers["content-type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(response.content)).namelist()
    assert {n.split("/", 1)[1] for n in names} >= {"passport.json", "model.sig", "golden/inputs.npy",
                                                   *(f["name"] for f in record["files"])}
    (tmp_path / "signed.zip").write_bytes(response.content)
    (tmp_path / "key.pem").write_text(client.get("/api/signing-key").text)
    result = cli("verify", str(tmp_path / "signed.zip"), "--public-key", str(tmp_path / "key.pem"), "--rerun",
                 workspace=tmp_path / "elsewhere")
    assert result.returncode == 0, result.stdout + result.stderr
    upload = client.post("/api/uploads", params={"filename": "signed.zip"}, content=response.content).json()
    checked = client.post("/api/verify", json={"upload_id": upload["upload_id"]}).json()
    assert checked["valid"] and [c["check"] for c in checked["folders"][0]["checks"]] == ["signature", "files",
                                                                                          "passport"]


@pytest.mark.parametrize("path, status, json_body", [
    ("/api/export/export-00000000", 404, True),
    ("/api/export/not-an-id", 404, True),
    ("/api/export/%E2%80%AEexport-1234abcd", 404, True),
    ("/api/export/export-ÄÖÜ12345/download", 404, True),
    ("/api/exports?project_id=../x", 404, True),
    ("/api/exports?project_id=a%00b", 404, True),
    # Streamlit's own path-security middleware answers these before our routes: plain 400.
    ("/api/export/..%2F..%2Fetc%2Fpasswd/download", 400, False),
    ("/api/export/export-0000%000/download", 400, False),
])
def test_bad_ids(client, path, status, json_body):
    response = client.get(path)
    assert response.status_code == status
    assert b"root:" not in response.content
    if json_body:
        assert set(response.json()["error"]) == {"type", "message"}
    assert client.get("/api/formats").status_code == 200


@pytest.mark.parametrize("body, status, text", [
    ({**CLS, "format": "rknn"}, 400, "known formats"),
    ({**CLS, "format": "tensorrt"}, 409, "install the tensorrt package"),
    ({**CLS, "project_id": "nope"}, 404, "No project"),
    ({**CLS, "experiment_id": "nope"}, 404, "no experiment"),
    ({**CLS, "checkpoint": "epoch9"}, 404, "no checkpoint"),
    ({**CLS, "options": {"opset_version": 99}}, 400, "out of range"),
    ({**CLS, "options": {"opset_version": "seventeen"}}, 400, "integer"),
    ({**CLS, "options": {"input_shape": [1, 3, 100000, 100000]}}, 400, "too large"),
    ({**CLS, "options": {"nope": 1}}, 400, "valid options"),
    ({**CLS, "surprise": 1}, 422, "surprise"),
    ({"project_id": "demo-classification"}, 422, "experiment_id"),
])
def test_bad_bodies(client, api_ws, body, status, text):
    before = read_index(api_ws, "demo-classification")
    response = client.post("/api/export", json=body)
    assert response.status_code == status, response.text
    assert text in response.json()["error"]["message"]
    assert read_index(api_ws, "demo-classification") == before


def test_malformed_and_oversize_bodies(client):
    response = client.post("/api/export", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422 and "error" in response.json()
    huge = json.dumps({**CLS, "options": {"x": "a" * (2 << 20)}})
    response = client.post("/api/export", content=huge, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert client.get("/api/formats").status_code == 200


def test_not_completed_export_does_not_download(client, api_ws):
    from exporter.store import ExportStore
    from exporter.workspace import Workspace

    store = ExportStore.for_project(Workspace(api_ws), "demo-regression")
    pending = store.create(**record_fields(project_id="demo-regression", status="running", created_at="2000",
                                           worker={"pid": os.getpid()}))
    response = client.get(f"/api/export/{pending.id}/download")
    assert response.status_code == 409 and "running" in response.json()["error"]["message"]


def test_symlink_out_of_the_folder_is_never_served(client, api_ws, completed):
    body = {**CLS, "options": {"simplify": False}}
    record = wait_for(client, client.post("/api/export", json=body).json()["id"])
    target = api_ws / "projects/demo-classification/exports" / record["id"] / "model.onnx"
    target.unlink()
    target.symlink_to("/etc/passwd")
    response = client.get(f"/api/export/{record['id']}/download")
    assert response.status_code == 404 and b"root:" not in response.content


def test_delete(client, api_ws):
    record = wait_for(client, client.post("/api/export", json=CLS).json()["id"])
    assert client.delete(f"/api/export/{record['id']}").json() == {"deleted": record["id"]}
    assert client.get(f"/api/export/{record['id']}").status_code == 404
    assert not (api_ws / "projects/demo-classification/exports" / record["id"]).exists()
    assert record["id"] not in [e["id"] for e in read_index(api_ws, "demo-classification")]
    assert client.delete(f"/api/export/{record['id']}").status_code == 404


def test_delete_cancels_a_running_export(client, api_ws):
    record = client.post("/api/export", json={**CLS, "options": {"input_shape": "1,3,512,512"}}).json()
    assert client.delete(f"/api/export/{record['id']}").status_code == 200
    assert not (api_ws / "projects/demo-classification/exports" / record["id"]).exists()


def test_token_and_recovery_on_start(demo_template, tmp_path):
    """With AISTUDIO_API_TOKEN every route needs it; a dead worker's record becomes Interrupted."""
    from exporter.store import ExportStore
    from exporter.workspace import Workspace

    ws = linked_copy(demo_template, tmp_path / "ws")
    store = ExportStore.for_project(Workspace(ws), "demo-regression")
    orphan = store.create(**record_fields(project_id="demo-regression", status="running", created_at="1",
                                          progress={"stage": "export", "fraction": 0.3},
                                          worker={"pid": 999_999, "create_time": 1.0}))
    (store.export_dir(orphan.id) / ".partial").mkdir()
    with running_server(ws, AISTUDIO_API_TOKEN="s3cret") as base:
        assert httpx.get(f"{base}/api/formats").status_code == 401
        assert httpx.get(f"{base}/api/formats", headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = httpx.get(f"{base}/api/export/{orphan.id}", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        record = ok.json()
    assert record["status"] == "failed" and record["error"]["type"] == "Interrupted"
    assert record["error"]["stage"] == "export"
    assert not (store.export_dir(orphan.id) / ".partial").exists()


def test_attach_a_labelled_set_from_a_staged_upload(client, api_ws, demo_full_template, tmp_path):
    """POST /api/uploads, then POST /api/projects/{id}/datasets: a zip becomes data/val; a refused one
    answers 422 with the reason and leaves the project as it was."""
    val = demo_full_template / "projects" / "demo-oriented" / "data" / "val"
    archive = tmp_path / "val.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(val.rglob("*")):
            zf.write(path, path.relative_to(val).as_posix())
        zf.writestr("../../escape.png", b"x")
    staged = client.post("/api/uploads", params={"filename": "val.zip"}, content=archive.read_bytes()).json()
    project = api_ws / "projects" / "demo-oriented"
    before = sorted(p.name for p in project.iterdir())
    refused = client.post("/api/projects/demo-oriented/datasets", data={"upload_id": staged["upload_id"]})
    assert refused.status_code == 422 and "outside its folder" in refused.json()["error"]["message"]
    assert sorted(p.name for p in project.iterdir()) == before
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(val.rglob("*")):
            zf.write(path, path.relative_to(val).as_posix())
    staged = client.post("/api/uploads", params={"filename": "val.zip"}, content=archive.read_bytes()).json()
    attached = client.post("/api/projects/demo-oriented/datasets", data={"upload_id": staged["upload_id"]})
    assert attached.status_code == 201, attached.text
    assert attached.json()["images"] == 100 and attached.json()["layout"] == "dota"
    assert (project / "data" / "val" / "labelTxt" / "val_099.txt").is_file()
    again = client.post("/api/projects/demo-oriented/datasets", data={"upload_id": staged["upload_id"]})
    assert again.status_code == 404  # the staged upload was consumed


def _benchmark(client, export_id: str) -> dict:
    """Poll the record until its latest benchmark has ended; returns that entry."""
    import time

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        entry = client.get(f"/api/export/{export_id}").json()["benchmarks"][-1]
        if entry["status"] not in ("queued", "running"):
            return entry
        time.sleep(0.5)
    raise TimeoutError(entry)


def test_benchmark_in_the_background(client, completed):
    started = client.post(f"/api/export/{completed['id']}/benchmark", json={"batch_sizes": [1, 2], "seconds": 0.2})
    assert started.status_code == 202, started.text
    assert started.json()["benchmarks"][-1]["status"] == "running"
    again = client.post(f"/api/export/{completed['id']}/benchmark", json={})
    assert again.status_code == 400 and "being benchmarked already" in again.json()["error"]["message"]
    entry = _benchmark(client, completed["id"])
    assert entry["status"] == "completed", entry
    assert {r: [b["batch"] for b in entry["results"][r]["batches"]] for r in ("file", "pytorch")} == {
        "file": [1, 2], "pytorch": [1, 2]}
    assert entry["results"]["file"]["settings"]["graph_optimization_level"] == "ORT_ENABLE_ALL"
    assert entry["machine"]["isa"] is not None and entry["machine"]["threads"] == entry["threads"]
    for body, text in (({"batch_sizes": [0]}, "batch_sizes"), ({"seconds": 500}, "seconds"),
                       ({"bogus": 1}, "bogus")):
        response = client.post(f"/api/export/{completed['id']}/benchmark", json=body)
        assert response.status_code == 422 and text in response.text, response.text


def test_diagnose_in_the_background(client, completed):
    started = client.post(f"/api/export/{completed['id']}/diagnose")
    assert started.status_code == 202, started.text
    assert started.json()["diagnosis"]["status"] == "running"
    diagnosis = _part(client, completed["id"], "diagnosis")
    assert diagnosis["status"] == "completed" and diagnosis["reference"] == "pytorch", diagnosis
    assert diagnosis["mapping"]["conv_mapped"] == diagnosis["mapping"]["conv"] == 20
    assert [row["index"] for row in diagnosis["layers"]] == sorted(row["index"] for row in diagnosis["layers"])
    assert client.post("/api/export/export-00000000/diagnose").status_code == 404


def _part(client, export_id: str, field: str) -> dict:
    """Poll the record until its ``field`` (a side job's part) is no longer running."""
    import time

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        part = client.get(f"/api/export/{export_id}").json()[field]
        if part["status"] != "running":
            return part
        time.sleep(0.5)
    raise TimeoutError(part)


def test_cancel_a_running_benchmark_keeps_no_half_figures(client, completed):
    import time

    import psutil

    record = client.post(f"/api/export/{completed['id']}/benchmark", json={"batch_sizes": [1], "seconds": 60}).json()
    before = len(record["benchmarks"]) - 1
    deadline = time.monotonic() + 60
    while "batch" not in (entry := client.get(f"/api/export/{completed['id']}").json()["benchmarks"][-1])[
            "progress"]["stage"] and time.monotonic() < deadline:  # the measuring child is timing runs
        time.sleep(0.2)
    worker = psutil.Process(entry["worker"]["pid"])
    processes = [worker, *worker.children(recursive=True)]
    assert len(processes) >= 2, processes
    cancelled = client.delete(f"/api/export/{completed['id']}/benchmark")
    assert cancelled.status_code == 200 and len(cancelled.json()["benchmarks"]) == before
    gone, alive = psutil.wait_procs(processes, timeout=10)
    assert not alive, alive
    assert all(b["status"] == "completed" for b in client.get(f"/api/export/{completed['id']}").json()["benchmarks"])


def test_benchmark_refusals(client, api_ws):
    assert client.post("/api/export/export-00000000/benchmark", json={}).status_code == 404
    running = client.post("/api/export", json={**CLS, "options": {"input_shape": "1,3,256,256"}}).json()
    refused = client.post(f"/api/export/{running['id']}/benchmark", json={})
    assert refused.status_code == 400 and "only completed exports" in refused.json()["error"]["message"]
    client.delete(f"/api/export/{running['id']}")
    then = client.post("/api/export", json={**CLS, "benchmark": {"batch_sizes": [1], "seconds": 0.1}}).json()
    assert then["benchmarks"][0]["status"] == "queued" and then["benchmarks"][0]["requested"] == {
        "batch_sizes": [1], "seconds": 0.1}  # run by the export's worker once the file is made
    client.delete(f"/api/export/{then['id']}")
    bad = client.post("/api/export-all", json={**CLS, "experiment_id": "missing"})
    assert bad.status_code == 404 and "missing" in bad.json()["error"]["message"]


def test_export_all_starts_one_export_per_format_and_precision(client, api_ws):
    """The route's answer (the whole run, to the Compare chart, is the browser test's): one pending record per
    combination, each with its benchmark queued behind it; TensorRT skipped with the reason."""
    from exporter.formats import get_available_formats, get_format

    response = client.post("/api/export-all", json={"project_id": "demo-anomaly", "experiment_id": "exp-autoencoder"})
    assert response.status_code == 202, response.text
    body = response.json()
    expected = [(r["name"], label) for r in get_available_formats("anomaly_detection") if r["available"]
                for label, _ in get_format(r["name"]).variants]
    made = [(r["format"], get_format(r["format"]).variant_label(r["options"])) for r in body["started"]]
    assert sorted(made) == sorted(expected)
    runs_here = [r for r in body["started"] if not get_format(r["format"]).runs_here()]
    assert all(r["benchmarks"][0]["status"] == "queued" for r in runs_here)
    assert all(not r["benchmarks"] for r in body["started"] if r not in runs_here)  # Core ML: not on Linux
    assert {s["format"] for s in body["skipped"]} <= {"tensorrt"} and all(s["reason"] for s in body["skipped"])
    for record in body["started"]:
        assert client.delete(f"/api/export/{record['id']}").status_code == 200
