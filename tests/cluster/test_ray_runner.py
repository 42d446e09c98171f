"""Jobs on a real two-node Ray cluster (``ray start`` head with 1 CPU, a worker node with 1 CPU and the
custom resource ``edge``), driven through the CLI and the HTTP API exactly as a user would with
``AISTUDIO_RUNNER=ray``; each record is compared with a local run of the same request."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import httpx
import onnx
import psutil
import pytest

from testkit.server import running_server, wait_for
from tests.conftest import ROOT, linked_copy
from tests.helpers import cli, user_class

CLI_TASKS = {"demo-classification": "exp-resnet18-shapes", "demo-regression": "exp-resnet18-center",
             "demo-anomaly": "exp-autoencoder", "demo-oriented": "exp-obb-resnet18"}
API_TASKS = {"demo-segmentation": "exp-lraspp-shapes", "demo-detection": "exp-fasterrcnn-resnet18-fpn",
             "demo-instance-segmentation": "exp-maskrcnn-resnet18-fpn"}


@pytest.fixture(scope="module")
def cluster():
    from testkit.ray_cluster import RayCluster, private_network

    network = private_network()
    try:
        network.__enter__()
    except PermissionError as exc:  # not root: a developer's machine (CI runs as root)
        pytest.skip(f"the Ray tests need a network namespace of their own (run as root): {exc}")
    except FileNotFoundError:
        pytest.fail("the Ray tests need `ip` to bring loopback up in their namespace: apt-get install iproute2")
    ray_cluster = RayCluster()
    try:
        yield ray_cluster.start()
    finally:
        ray_cluster.stop()
        network.__exit__(None, None, None)


@pytest.fixture(scope="module")
def ray_env(cluster):
    return {"AISTUDIO_RUNNER": "ray", "AISTUDIO_RAY_ADDRESS": cluster.address}


@pytest.fixture(scope="module")
def ray_ws(demo_template, tmp_path_factory):
    return linked_copy(demo_template, tmp_path_factory.mktemp("ray") / "ws")


@pytest.fixture(scope="module")
def server(ray_ws, ray_env):
    with running_server(ray_ws, **ray_env) as base:
        yield base


def graph_digest(path) -> str:
    """sha256 of an ONNX file without its ``export_id`` metadata (the one value that differs run to run)."""
    model = onnx.load(str(path))
    kept = [p for p in model.metadata_props if p.key != "export_id"]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    return hashlib.sha256(model.SerializeToString()).hexdigest()


def assert_like_a_local_run(root, record: dict, cluster) -> None:
    """The Ray record and files equal a local export of the same request, but for ``worker``."""
    from exporter import ExportRequest, Workspace, export_checkpoint

    local = export_checkpoint(Workspace(root), ExportRequest(record["project_id"], record["experiment_id"],
                                                             options={"evaluate": False})).to_json()
    assert record["status"] == local["status"] == "completed", record["error"]
    assert record["validation"]["verdict"] == local["validation"]["verdict"]
    # A Ray task with 1 CPU runs PyTorch and ONNX Runtime on one thread (OMP_NUM_THREADS=1): sums in another
    # order, so the largest diff moves in its last digits (8.6e-6 against 6.7e-6 for the demo segmenter).
    assert record["validation"]["max_diff"] == pytest.approx(local["validation"]["max_diff"], rel=1.0, abs=1e-7)
    assert [f["name"] for f in record["files"]] == [f["name"] for f in local["files"]]
    folder = root / "projects" / record["project_id"] / "exports"
    assert graph_digest(folder / record["id"] / "model.onnx") == graph_digest(folder / local["id"] / "model.onnx")
    assert record["model"] == local["model"] and record["warnings"] == local["warnings"]
    worker = record["worker"]
    assert worker["runner"] == "ray" and worker["node_id"] in {n["NodeID"] for n in cluster.nodes()}
    assert worker["host"] and worker["node_resources"]["CPU"] == 1 and worker["resources"]["CPU"] == 1
    leftovers = {p.name for p in (folder / record["id"]).iterdir()} - {"export.json", "model.onnx", "worker.log",
                                                                       "golden", "passport.json", "model.sig"}
    assert not leftovers, leftovers
    from exporter import passport  # signed by the owner, with the workspace's key, not the node's scratch one

    owner_key = passport.fingerprint(passport.signing_key(root))
    assert passport.signed_by(folder / record["id"]) == owner_key


def test_cli_exports_run_on_the_cluster_like_local_ones(ray_ws, ray_env, cluster):
    """Four demo tasks through ``python -m exporter export`` at once (the cluster queues what its two CPUs cannot
    take yet); one pinned with ``target=edge`` runs on the worker node, the only one offering ``edge``."""
    from concurrent.futures import ThreadPoolExecutor

    def export(project: str) -> dict:
        pinned = ["--option", "target=edge"] if project == "demo-classification" else []
        result = cli("export", "--project", project, "--experiment", CLI_TASKS[project], "--option", "evaluate=false",
                     *pinned, "--json", workspace=ray_ws, env=ray_env)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    with ThreadPoolExecutor(len(CLI_TASKS)) as pool:
        records = dict(zip(CLI_TASKS, pool.map(export, CLI_TASKS), strict=True))
    for record in records.values():
        assert_like_a_local_run(ray_ws, record, cluster)
    pinned = records["demo-classification"]
    assert pinned["worker"]["node_id"] == cluster.worker_node_id() and pinned["worker"]["resources"]["edge"] == 1


@pytest.mark.parametrize(("file", "cls", "task", "kwargs"), [
    ("tiny_detector.py", "TinyDetector", "object_detection", {}),
    ("tiny_segmenter.py", "TinySegmenter", "segmentation", {"num_classes": 4, "width": 6}),  # a LightningModule
])
def test_own_model_code_travels_with_the_checkpoint_to_the_worker_node(ray_ws, ray_env, cluster, tmp_path, file, cls,
                                                                        task, kwargs):
    """A model of the user's own code, imported from a file that is gone before the export: pinned to the worker
    node (``target=edge``), it is built there from the code the checkpoint carries, and matches a local run."""
    import shutil

    import torch

    code = Path(shutil.copy(ROOT / "tests/fixtures/user_models" / file, tmp_path / file))
    torch.manual_seed(0)
    # As Lightning saves it: the weights, and the __init__ arguments as hyper-parameters.
    torch.save({"state_dict": user_class(code, cls)(**kwargs).state_dict(), "hyper_parameters": kwargs},
               tmp_path / "weights.ckpt")
    project = f"own-{task.replace('_', '-')}"
    result = cli("import", str(tmp_path / "weights.ckpt"), "--project", project, "--create-project", "--task", task,
                 "--model-code", f"{code}:{cls}", "--class-names", "background,circle,square,triangle",
                 "--input-size", "3,128,128", "--json", workspace=ray_ws)
    assert result.returncode == 0, result.stderr
    code.unlink()
    experiment = json.loads(result.stdout)["id"]
    result = cli("export", "--project", project, "--experiment", experiment, "--option", "target=edge", "--json",
                 workspace=ray_ws, env=ray_env)
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["worker"]["node_id"] == cluster.worker_node_id()
    assert record["model"]["code_sha256"]
    assert_like_a_local_run(ray_ws, record, cluster)


def test_a_job_no_node_can_run_is_refused_at_submit(ray_ws, ray_env):
    result = cli("export", "--project", "demo-classification", "--experiment", "exp-resnet18-shapes",
                 "--option", "target=gpu:H100", workspace=ray_ws, env=ray_env)
    assert result.returncode == 2
    assert "no node offers gpu:H100" in result.stderr
    exports = ray_ws / "projects/demo-classification/exports"
    assert not any("gpu:H100" in p.read_text() for p in exports.glob("export-*/export.json"))


def test_api_exports_run_on_the_cluster_like_local_ones(server, ray_ws, cluster):
    """Three demo tasks through ``POST /api/export``: progress arrives while they run, the record names the node."""
    with httpx.Client(base_url=server, timeout=30) as client:
        started = {}
        for project, experiment in API_TASKS.items():
            response = client.post("/api/export", json={"project_id": project, "experiment_id": experiment,
                                                        "options": {"evaluate": False}})
            assert response.status_code == 202, response.text
            started[project] = response.json()["id"]
        fractions = set()
        while not fractions or len(fractions) < 3:  # progress updates while the detector runs on its node
            record = client.get(f"/api/export/{started['demo-detection']}").json()
            fractions.add(record["progress"]["fraction"])
            if record["status"] not in ("pending", "running"):
                break
            time.sleep(0.5)
        assert len(fractions) >= 2, fractions
        for export_id in started.values():
            assert_like_a_local_run(ray_ws, wait_for(client, export_id), cluster)


def test_deleting_a_running_export_cancels_its_task_and_frees_the_node(server, ray_ws, cluster):
    """``DELETE /api/export/{id}`` on a running Ray export: its task's process ends within seconds, the record
    and folder are gone for good (nothing comes back later), and the node runs the next job pinned to it."""
    with httpx.Client(base_url=server, timeout=30) as client:
        body = {"project_id": "demo-instance-segmentation", "experiment_id": "exp-maskrcnn-resnet18-fpn",
                "options": {"evaluate": False, "target": "edge"}}
        export_id = client.post("/api/export", json=body).json()["id"]
        task = psutil.Process(_wait_running_on_a_node(client, export_id)["task_pid"])
        assert client.delete(f"/api/export/{export_id}").status_code == 200
        gone, _ = psutil.wait_procs([task], timeout=10)  # ray.cancel(force=True) ends the task's process
        assert gone, "the cancelled task still runs"
        quick = client.post("/api/export", json={"project_id": "demo-regression", "experiment_id":
                                                 "exp-resnet18-center", "options": {"evaluate": False,
                                                                                    "target": "edge"}}).json()
        assert wait_for(client, quick["id"], timeout=120)["status"] == "completed"
        assert client.get(f"/api/export/{export_id}").status_code == 404
    assert not (ray_ws / "projects/demo-instance-segmentation/exports" / export_id).exists()


def test_a_node_that_dies_mid_export_interrupts_the_record(server, ray_ws, cluster):
    """SIGKILL the worker node's raylet during an export pinned to it: the record ends failed/Interrupted,
    naming the node, with nothing partial in the workspace; the node then rejoins for what follows."""
    with httpx.Client(base_url=server, timeout=30) as client:
        body = {"project_id": "demo-instance-segmentation", "experiment_id": "exp-maskrcnn-resnet18-fpn",
                "options": {"evaluate": False, "target": "edge"}}
        export_id = client.post("/api/export", json=body).json()["id"]
        node = _wait_running_on_a_node(client, export_id)
        cluster.kill_worker_raylet()
        record = wait_for(client, export_id, timeout=120)
    assert record["status"] == "failed" and record["error"]["type"] == "Interrupted", record
    assert node["node_id"][:12] in record["error"]["message"] and node["host"] in record["error"]["message"]
    folder = ray_ws / "projects/demo-instance-segmentation/exports" / export_id
    assert {p.name for p in folder.iterdir()} <= {"export.json", "worker.log"}
    cluster.add_worker()


def test_an_owner_that_dies_leaves_its_records_to_the_next_start(ray_ws, ray_env, cluster):
    """SIGKILL the CLI that owns a running Ray export (the driver): Ray ends its task, and what the dashboard
    runs at start-up (``recover_interrupted``) marks the record Interrupted, its folder empty."""
    import subprocess
    import sys

    from exporter import Workspace
    from exporter.jobs import recover_interrupted
    from exporter.store import ExportStore
    from tests.conftest import ROOT

    owner = subprocess.Popen([sys.executable, "-m", "exporter", "export", "--project", "demo-instance-segmentation",
                              "--experiment", "exp-maskrcnn-resnet18-fpn", "--option", "evaluate=false",
                              "--workspace", str(ray_ws)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT),
                                                                          **ray_env},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = ExportStore(Workspace(ray_ws).project("demo-instance-segmentation"))
    deadline = time.monotonic() + 120
    while not (running := [store.get(e["id"]) for e in store.list() if e["status"] == "running"
                           and (store.get(e["id"]).worker.model_extra or {}).get("task_pid")]):
        assert time.monotonic() < deadline and owner.poll() is None
        time.sleep(0.2)
    (record,) = running
    owner.kill()
    owner.wait()
    task = psutil.Process(record.worker.model_extra["task_pid"]) if psutil.pid_exists(
        record.worker.model_extra["task_pid"]) else None
    assert record.id in recover_interrupted(Workspace(ray_ws))
    after = store.get(record.id)
    assert after.status == "failed" and after.error.type == "Interrupted"
    assert {p.name for p in store.export_dir(record.id).iterdir()} <= {"export.json", "worker.log"}
    if task is not None:
        gone, _ = psutil.wait_procs([task], timeout=30)  # Ray ends the tasks of a driver that is gone
        assert gone, "the dead owner's task still runs"


def _wait_running_on_a_node(client: httpx.Client, export_id: str, timeout: float = 120) -> dict:
    """The record's worker once the job has started on a node and passed its build stage."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = client.get(f"/api/export/{export_id}").json()
        if record["worker"].get("node_id") and record["progress"]["fraction"] >= 0.3:
            return record["worker"]
        assert record["status"] in ("pending", "running"), record
        time.sleep(0.2)
    raise TimeoutError(f"{export_id} did not start on a node")


def test_a_bundles_ray_serve_app_serves_the_classifier_on_both_nodes(ray_ws, cluster, tmp_path):
    """``serve_ray.py --address`` on the two-node cluster, two replicas of 1 CPU each: each node has 1 CPU, so
    both replicas running means one per node. Concurrent infer requests through Serve's batching answer the golden
    outputs, and the bundle's self-test passes against it."""
    import subprocess
    import sys

    import numpy as np

    from exporter import ExportRequest, Workspace, export_checkpoint
    from exporter.deploy import write_bundle
    from exporter.deploy.live import free_port

    record = export_checkpoint(Workspace(ray_ws), ExportRequest("demo-classification", "exp-resnet18-shapes",
                                                                options={"evaluate": False}))
    write_bundle(Workspace(ray_ws), record.id, ["server"], tmp_path / "bundle")
    folder, port = tmp_path / "bundle" / "server", free_port()
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    app = subprocess.Popen([sys.executable, "serve_ray.py", "--address", cluster.address, "--port", str(port),
                            "--replicas", "2", "--cpus-per-replica", "1", "--proxy", "HeadOnly"],
                           cwd=folder, env=cluster.env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while not _answers(f"{url}/v2/health/ready"):
            assert app.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(0.5)
        status = _serve_status(cluster, running=2)  # ready once one replica runs; the other may still start
        assert status == {"RUNNING": 2}, status
        meta = json.loads((folder / "model.json").read_text())
        x, golden = np.load(folder / "golden" / "inputs.npy"), np.load(folder / "golden" / "outputs.npz")["logits"]
        body = [{"inputs": [{"name": "input", "shape": [1, *x.shape[1:]], "datatype": "FP32",
                             "data": x[i % len(x)].ravel().tolist()}]} for i in range(16)]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda b: httpx.post(f"{url}/v2/models/{meta['name']}/infer", json=b,
                                                         timeout=60).json(), body))
        for i, answer in enumerate(answers):
            assert np.allclose(answer["outputs"][0]["data"], golden[i % len(x)], atol=1e-4), answer
        selftest = subprocess.run([sys.executable, "selftest.py", url], cwd=folder, capture_output=True, text=True)
        assert selftest.returncode == 0, selftest.stdout + selftest.stderr
    finally:
        stop = f"import ray; from ray import serve; ray.init(address='{cluster.address}'); serve.shutdown()"
        subprocess.run([sys.executable, "-c", stop], env=cluster.env, capture_output=True, timeout=120)
        app.terminate()
        app.wait(30)
        log.close()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _serve_status(cluster, running: int, wait_s: float = 120) -> dict:
    """The model deployment's replica states once ``running`` replicas run (or after ``wait_s``), asked from a child
    process (this one stays no Ray driver)."""
    import subprocess
    import sys

    script = (f"import json, time, ray; from ray import serve; ray.init(address='{cluster.address}', "
              f"logging_level='ERROR'); end = time.monotonic() + {wait_s}\n"
              "while True:\n"
              "    d = serve.status().applications['model'].deployments['ModelServer']\n"
              "    states = {str(k.value if hasattr(k, 'value') else k): v for k, v in d.replica_states.items()}\n"
              f"    if states.get('RUNNING') == {running} or time.monotonic() > end: break\n"
              "    time.sleep(1)\n"
              "print('STATES', json.dumps(states))")
    out = subprocess.run([sys.executable, "-c", script], env=cluster.env, capture_output=True, text=True,
                         timeout=wait_s + 120)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("STATES ")), None)
    assert line, out.stderr[-2000:]
    return json.loads(line.removeprefix("STATES "))
