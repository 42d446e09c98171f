"""Deploy bundles proven by serving them: each server bundle installed into a fresh virtual environment holding
only its ``requirements.txt``, started with ``start.sh``, asked by Triton's own client (``tritonclient.http``, in an
environment of its own), replayed by its self-test and compared with PyTorch on ``/predict``; every Triton config
parsed with Triton's protobuf schema, every OVMS config checked against OVMS' schema; bad requests answered 4xx."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib.metadata
import io
import json
import os
import struct
import subprocess
import time
import venv
import zlib
from pathlib import Path

import httpx
import jsonschema
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from exporter import ExportRequest, Workspace, export_checkpoint
from exporter.checkpoint import load_checkpoint
from exporter.deploy import TARGETS, write_bundle
from exporter.deploy.live import free_port
from exporter.pipeline import build_wrapped
from exporter.validation import load_images
from tests.conftest import ROOT, linked_copy
from tests.helpers import cli

CASES = [("demo-classification", "exp-resnet18-shapes"), ("demo-detection", "exp-fasterrcnn-resnet18-fpn"),
         ("demo-segmentation", "exp-lraspp-shapes")]
FORMATS = ("onnx", "openvino", "torchscript")
TRITONCLIENT = "tritonclient[http,grpc]==2.73.0"
CLIENT = Path(__file__).with_name("triton_client.py")
OVMS_SCHEMA = json.loads((ROOT / "tests" / "fixtures" / "ovms_config_schema.json").read_text())


def make_env(folder: Path, requirements: list[str]) -> Path:
    """A fresh virtual environment holding only what pip installs for ``requirements`` (pip arguments); its python.

    pip resolves them in the new environment (``--dry-run --report``: the exact distributions and versions it would
    install); each one this test's own environment holds at that version is linked in (its top-level files, read
    from its RECORD), the rest installed. A TorchScript bundle's torch is 5.5 GB on disk: linking it keeps a run's
    footprint small, and the environment still holds nothing the requirements do not bring."""
    venv.create(folder, with_pip=True)
    python = folder / "bin" / "python"
    report = folder / "pip-report.json"
    pip = [python, "-m", "pip", "install", "-q", "--no-compile"]
    subprocess.run([*pip, "--dry-run", "--ignore-installed", "--report", report, *requirements], check=True,
                   capture_output=True, timeout=900)
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               check=True, capture_output=True, text=True).stdout.strip())
    missing = []
    for item in json.loads(report.read_text())["install"]:
        name, version = item["metadata"]["name"], item["metadata"]["version"]
        if not link_distribution(name, version, site):
            missing.append(f"{name}=={version}")
    if missing:
        subprocess.run([*pip, "--no-deps", *missing], check=True, capture_output=True, timeout=900)
    return python


def link_distribution(name: str, version: str, site: Path) -> bool:
    """Link the top-level files of this environment's ``name`` into ``site`` when it holds that very version."""
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    if dist.version != version or not dist.files:
        return False
    for top in {file.parts[0] for file in dist.files if file.parts[0] != ".."}:
        source, target = Path(dist.locate_file(top)), site / top
        if source.exists() and not target.exists():
            target.symlink_to(source)
    return True


class Bundles:
    """Exports of the demo and their bundles (every target), and one fresh environment per distinct
    ``requirements.txt`` — made once for the module."""

    def __init__(self, workspace: Path, root: Path) -> None:
        self.workspace, self.root = workspace, root
        self.made: dict[tuple[str, str], tuple] = {}
        self.envs: dict[str, Path] = {}

    def get(self, project: str, experiment: str, fmt: str):
        if (project, fmt) not in self.made:
            record = export_checkpoint(Workspace(self.workspace), ExportRequest(project, experiment, format=fmt))
            assert record.status == "completed", record.error
            out = self.root / f"{project}-{fmt}"
            result = write_bundle(Workspace(self.workspace), record.id, list(TARGETS), out, strict=False)
            self.made[(project, fmt)] = (record, out, result)
        return self.made[(project, fmt)]

    def python_for(self, requirements: Path) -> Path:
        """A fresh environment holding exactly these requirements (one per distinct file)."""
        key = hashlib.sha256(requirements.read_bytes()).hexdigest()[:12]
        if key not in self.envs:
            self.envs[key] = make_env(self.root / f"env-{key}", ["-r", str(requirements)])
        return self.envs[key]


@pytest.fixture(scope="module")
def bundles(demo_template, tmp_path_factory) -> Bundles:
    root = tmp_path_factory.mktemp("deploy")
    return Bundles(linked_copy(demo_template, root / "ws"), root)


@pytest.fixture(scope="module")
def triton_python(tmp_path_factory) -> Path:
    return make_env(tmp_path_factory.mktemp("tritonclient") / "env", [TRITONCLIENT])


@pytest.fixture(scope="module")
def pytorch(demo_template):
    """PyTorch's wrapped module and spec per experiment (what the exports were validated against)."""
    built = {}

    def get(project: str, experiment: str):
        if experiment not in built:
            exp = Workspace(demo_template).project(project).experiment(experiment)
            built[experiment] = build_wrapped(load_checkpoint(exp.checkpoint("best").path), exp)
        return built[experiment]

    return get


@contextlib.contextmanager
def served(server: Path, python: Path):
    """``start.sh PORT`` with the bundle's environment; yields the URL once ready; ends it by its pid."""
    port = free_port()
    log = open(server / "server.log", "wb")  # noqa: SIM115
    process = subprocess.Popen([str(server / "start.sh"), str(port)], stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "PYTHON": str(python)})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, (server / "server.log").read_text()[-2000:]
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/v2/health/ready").status_code == 200:
                    break
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(15)
        log.close()


def relative_diff(got: np.ndarray, want: np.ndarray) -> float:
    return float((np.abs(got.astype(np.float64) - want) / np.maximum(1.0, np.abs(want))).max(initial=0.0))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(("project", "experiment"), CASES)
def test_server_bundle_serves_triton_client_golden_outputs_and_pytorch_answers(
        bundles, triton_python, pytorch, tmp_path, project, experiment, fmt):
    record, out, result = bundles.get(project, experiment, fmt)
    server = out / "server"
    python = bundles.python_for(server / "requirements.txt")
    if fmt != "torchscript":  # a runtime-only environment: PyTorch is not there
        assert subprocess.run([python, "-c", "import torch"], capture_output=True).returncode != 0
    meta = json.loads((server / "model.json").read_text())
    golden = np.load(server / "golden" / "outputs.npz")
    with served(server, python) as url:
        selftest = subprocess.run([python, "selftest.py", url], cwd=server, capture_output=True, text=True)
        assert selftest.returncode == 0, selftest.stdout + selftest.stderr
        answers = tmp_path / "triton.npz"
        client = subprocess.run([triton_python, CLIENT, "infer", url.removeprefix("http://"), meta["name"],
                                 server / "golden" / "inputs.npy", answers], capture_output=True, text=True)
        assert client.returncode == 0, client.stderr[-3000:]
        assert json.loads(client.stdout)["model_ready"]
        got = np.load(answers)
        for name in golden.files:  # binary tensors, JSON tensors, and the client's defaults
            for variant in (name, f"{name}.json", f"{name}.default"):
                assert relative_diff(got[variant], golden[name]) <= meta["tolerance"], variant
        sample = server / "golden" / "sample.png"
        answer = httpx.post(f"{url}/predict", files={"file": sample.read_bytes()}, timeout=60).json()
    assert_like_pytorch(answer, pytorch(project, experiment), sample)
    assert_triton_config(out / "triton" / meta["name"], record, fmt, triton_python)
    assert_other_targets(out, result, fmt)


def assert_like_pytorch(answer: dict, built, sample: Path) -> None:
    """``/predict`` gives PyTorch's classes, boxes or mask for the same image."""
    spec, module = built
    with torch.no_grad():
        outputs = module(load_images([sample], spec.input_size, spec.normalization))
    outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    if answer["task"] == "classification":
        probs = torch.softmax(outputs[0][0].double(), 0)
        assert answer["classes"][0]["label"] == spec.class_names[int(probs.argmax())]
        assert abs(answer["classes"][0]["probability"] - float(probs.max())) < 1e-3
    elif answer["task"] == "object_detection":
        boxes, scores, labels, count = (o[0] for o in outputs)
        found = [(d["index"], np.array(d["box"])) for d in answer["detections"]]
        confident = [(int(label), box.numpy()) for box, score, label in
                     zip(boxes[:int(count)], scores[:int(count)], labels[:int(count)], strict=True) if score >= 0.5]
        assert confident, "the sample shows no confident detection"
        for label, box in confident:  # every confident PyTorch box is answered, same label, within a pixel
            assert any(index == label and np.abs(answered - box).max() < 1.0 for index, answered in found), box
    else:
        mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(answer["mask"]))))
        expected = outputs[0][0].argmax(0).numpy()
        assert mask.shape == expected.shape and (mask == expected).mean() >= 0.99


def assert_triton_config(folder: Path, record, fmt: str, triton_python: Path) -> None:
    """``config.pbtxt`` parses with Triton's ``ModelConfig`` schema and names the file's inputs and outputs."""
    parsed = subprocess.run([triton_python, CLIENT, "config", folder / "config.pbtxt"], capture_output=True,
                            text=True)
    assert parsed.returncode == 0, parsed.stderr[-2000:]
    config = json.loads(parsed.stdout)
    model = record.model
    names = (["INPUT__0"], [f"OUTPUT__{i}" for i in range(len(model.outputs))]) if fmt == "torchscript" else (
        [t.name for t in model.inputs], [t.name for t in model.outputs])
    assert [t["name"] for t in config["input"]] == names[0] and [t["name"] for t in config["output"]] == names[1]
    assert int(config["max_batch_size"]) == 8  # the demo exports have a dynamic batch
    assert [int(d) for d in config["input"][0]["dims"]] == list(model.input_size)
    for spec, output in zip(model.outputs, config["output"], strict=True):
        dims = [int(d) for d in output["dims"]]
        assert dims == ([d for d in spec.shape[1:]] or [1]), (spec, output)
        assert output["data_type"] == {"float32": "TYPE_FP32", "int64": "TYPE_INT64"}[spec.dtype]
    files = {p.name for p in (folder / "1").iterdir()}
    assert {f.name for f in record.files} == files
    warmup = (folder / "warmup" / "sample_input").stat().st_size
    assert warmup == 4 * int(np.prod(model.input_size))  # one float32 image
    if model.task == "classification":
        assert (folder / "labels.txt").read_text().split() == list(model.class_names)


def assert_other_targets(out: Path, result: dict, fmt: str) -> None:
    if fmt == "torchscript":
        assert "OpenVINO Model Server loads only ONNX and OpenVINO IR" in result["targets"]["ovms"]["refused"]
        assert not (out / "ovms").exists()
    else:
        config = json.loads((out / "ovms" / "config.json").read_text())
        jsonschema.validate(config, OVMS_SCHEMA)
        model = config["model_config_list"][0]["config"]
        assert sorted(p.name for p in (out / "ovms" / model["base_path"] / "1").iterdir())
    services = [yaml.safe_load((out / "kserve" / name).read_text()) for name in ("server.yaml", "triton.yaml")]
    assert {s["kind"] for s in services} == {"InferenceService"}
    assert services[1]["spec"]["predictor"]["model"]["protocolVersion"] == "v2"


def png_claiming(width: int, height: int) -> bytes:
    """A valid 1×1 PNG whose header claims ``width``×``height`` (a decompression bomb's header)."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    header = b"IHDR" + struct.pack(">II", width, height) + bytes(data[24:29])
    data[12:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(header))
    return bytes(data)


def test_bad_requests_get_4xx_and_the_next_good_one_is_answered(bundles):
    record, out, _ = bundles.get(*CASES[0], "onnx")
    server = out / "server"
    name = json.loads((server / "model.json").read_text())["name"]
    x = np.load(server / "golden" / "inputs.npy")
    good = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
    wrong_shape = {"inputs": [{**good["inputs"][0], "shape": [1, 3, 32, 32], "data": [0.0] * 3 * 32 * 32}]}
    wrong_type = {"inputs": [{**good["inputs"][0], "datatype": "INT64", "data": [0] * x.size}]}
    with served(server, bundles.python_for(server / "requirements.txt")) as url:
        infer = f"{url}/v2/models/{name}/infer"
        refused = {
            "wrong shape": httpx.post(infer, json=wrong_shape),
            "wrong dtype": httpx.post(infer, json=wrong_type),
            "malformed JSON": httpx.post(infer, content=b'{"inputs": [', headers={"Content-Type": "application/json"}),
            "unknown model": httpx.post(f"{url}/v2/models/nope/infer", json=good),
            "not an image": httpx.post(f"{url}/predict", content=b"GIF89a, or not",
                                       headers={"Content-Type": "image/png"}),
            "20000x20000 image": httpx.post(f"{url}/predict", files={"file": png_claiming(20000, 20000)}),
            "200 MB body": post_huge(f"{url}/predict", 200 << 20),
        }
        for what, response in refused.items():
            assert 400 <= response.status_code < 500, (what, response.status_code, response.text)
            assert response.json()["error"], what
        assert refused["unknown model"].status_code == 404 and refused["200 MB body"].status_code == 413
        assert refused["20000x20000 image"].status_code == 413
        answer = httpx.post(infer, json=good, timeout=60).json()
    golden = np.load(server / "golden" / "outputs.npz")["logits"]
    assert np.allclose(np.array(answer["outputs"][0]["data"]).reshape(golden.shape), golden, atol=1e-5)


def post_huge(url: str, size: int) -> httpx.Response:
    """A body of ``size`` bytes, streamed: the server refuses it from its declared length, before reading it."""
    def chunks():
        block = bytes(1 << 20)
        for _ in range(size >> 20):
            yield block

    return httpx.post(url, content=chunks(), headers={"Content-Length": str(size), "Content-Type": "image/png"},
                      timeout=60)


def test_deploy_cli_writes_bundles_refuses_what_a_format_cannot_take_and_never_overwrites(bundles, tmp_path):
    record, _, _ = bundles.get(*CASES[0], "torchscript")
    out = tmp_path / "bundle"
    refused = cli("deploy", record.id, "--target", "ovms", "--out", str(out), workspace=bundles.workspace)
    assert refused.returncode == 2 and "OpenVINO Model Server loads only ONNX" in refused.stderr
    assert not out.exists()  # refused before anything is written
    written = cli("deploy", record.id, "--target", "triton,kserve", "--out", str(out), "--json",
                  workspace=bundles.workspace)
    assert written.returncode == 0, written.stderr
    result = json.loads(written.stdout)
    assert set(result["targets"]) == {"triton", "kserve"}
    assert f"{result['model_name']}/config.pbtxt" in result["targets"]["triton"]["files"]
    again = cli("deploy", record.id, "--target", "triton", "--out", str(out), workspace=bundles.workspace)
    assert again.returncode == 2 and "not empty" in again.stderr
    unknown = cli("deploy", record.id, "--target", "k8s", workspace=bundles.workspace)
    assert unknown.returncode == 2 and "triton, ovms, kserve, server" in unknown.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]  # no scratch folder left behind


def test_formats_that_no_engine_loads_are_refused_with_the_reason():
    from exporter.deploy import refusal
    from exporter.formats import get_format

    coreml = get_format("coreml", require_available=False)
    assert "no Core ML backend" in refusal(coreml, "triton")
    assert "macOS" in refusal(coreml, "server")
    assert "ONNX and OpenVINO IR" in refusal(get_format("ncnn", require_available=False), "ovms")
    assert refusal(get_format("onnx", require_available=False), "ovms") == ""


def test_a_fixed_batch_file_has_max_batch_size_0_and_full_dims(bundles, tmp_path):
    """Triton's convention for a file whose batch cannot change: no batching, the batch axis in dims."""
    record = export_checkpoint(Workspace(bundles.workspace), ExportRequest(
        *CASES[0], format="onnx", options={"dynamic_batch": False, "input_shape": "2,3,64,64"}))
    result = write_bundle(Workspace(bundles.workspace), record.id, ["triton"], tmp_path / "b")
    config = (tmp_path / "b" / "triton" / result["model_name"] / "config.pbtxt").read_text()
    assert "max_batch_size: 0" in config and "dims: [ 2, 3, 64, 64 ]" in config and "dynamic_batching" not in config


def _gone(url: str, seconds: float = 20) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/v2/health/ready", timeout=2)
        except httpx.HTTPError:
            return True
        time.sleep(0.3)
    return False


def test_serve_answers_until_interrupted(bundles):
    import signal
    import sys

    record, out, _ = bundles.get(*CASES[0], "onnx")
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "exporter", "serve", record.id, "--port", str(port),
                                "--workspace", str(bundles.workspace)], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert process.stdout.readline().startswith(f"Serving {record.id}")
        name = json.loads((out / "server" / "model.json").read_text())["name"]
        assert httpx.get(f"http://127.0.0.1:{port}/v2/models/{name}").json()["inputs"][0]["shape"] == [-1, 3, 64, 64]
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
    assert _gone(f"http://127.0.0.1:{port}")


def test_live_servers_end_with_the_dashboard(bundles):
    from testkit.server import running_server

    record, _, _ = bundles.get(*CASES[0], "onnx")
    with running_server(bundles.workspace) as base:
        url = httpx.post(f"{base}/api/export/{record.id}/serve", timeout=120).json()["url"]
        assert httpx.get(f"{url}/v2/health/ready").status_code == 200
    assert _gone(url)
