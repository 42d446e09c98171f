"""The signed passport: every completed export is sealed (passport.json, golden/, model.sig); ``verify`` passes on it,
names what was tampered with, and ``model_signing``'s own verifier (in an environment of its own: its pins clash
with ours) accepts the signature; ``--rerun`` catches a changed weight even when everything was signed again;
``reproduce`` exports again and says how close it came, and refuses a changed checkpoint."""

from __future__ import annotations

import json
import shutil
import subprocess
import venv

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from exporter import ExportRequest, Workspace, export_checkpoint, passport
from exporter.checkpoint import file_sha256
from exporter.store import find_export
from tests.conftest import linked_copy
from tests.helpers import cli

PROJECT, EXPERIMENT = "demo-classification", "exp-resnet18-shapes"
MODEL_SIGNING = ["model-signing==1.1.1", "pyopenssl"]  # model_signing imports OpenSSL without declaring it


@pytest.fixture(scope="module")
def ws(demo_template, tmp_path_factory):
    return linked_copy(demo_template, tmp_path_factory.mktemp("passport") / "ws")


@pytest.fixture(scope="module")
def sealed(ws):
    record = export_checkpoint(Workspace(ws), ExportRequest(PROJECT, EXPERIMENT, options={"evaluate": False}))
    assert record.status == "completed", record.error
    return record, Workspace(ws).project(PROJECT).exports_dir / record.id


@pytest.fixture(scope="module")
def model_signing_python(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model-signing") / "env"
    venv.create(folder, with_pip=True)
    python = folder / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-compile", *MODEL_SIGNING], check=True,
                   capture_output=True, timeout=900)
    return python


def copy_of(folder, tmp_path):
    target = tmp_path / folder.name
    shutil.copytree(folder, target)
    return target


def test_a_completed_export_is_sealed_and_verifies(sealed, ws, model_signing_python):
    record, folder = sealed
    assert {p.name for p in folder.iterdir()} >= {"model.onnx", "passport.json", "model.sig", "golden"}
    content = json.loads((folder / "passport.json").read_text())
    assert content["files"][0]["sha256"] == file_sha256(folder / "model.onnx") == record.files[0].sha256
    assert content["source"]["checkpoint_sha256"] == record.checkpoint_sha256
    assert content["validation"]["verdict"] == "passed" and content["environment"]["onnxruntime"]
    assert np.load(folder / "golden" / "inputs.npy").shape == (2, 3, 64, 64)
    key = ws / ".signing" / "key.pem"
    assert key.stat().st_mode & 0o777 == 0o600 and not (folder / "key.pem").exists()
    ok = cli("verify", str(folder), "--rerun", workspace=ws)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "✓ rerun" in ok.stdout and "✓ files" in ok.stdout
    library = subprocess.run([model_signing_python, "-c", (  # their verifier, called directly
        "import sys, model_signing; model_signing.verifying.Config().use_elliptic_key_verifier("
        "public_key=sys.argv[1]).verify(sys.argv[2], sys.argv[3]); print('verified')"),
        ws / ".signing" / "public.pem", folder, folder / "model.sig"], capture_output=True, text=True)
    assert library.returncode == 0 and "verified" in library.stdout, library.stderr[-2000:]


def test_evidence_added_later_is_sealed_again(sealed, ws):
    from exporter.service import benchmark_export

    record, folder = sealed
    before = (folder / "model.sig").read_text()
    benchmark_export(Workspace(ws), record.id, {"batch_sizes": [1], "seconds": 0.2})
    content = json.loads((folder / "passport.json").read_text())
    assert content["benchmark"]["p50_ms"] > 0 and content["benchmark"]["machine"]["id"]
    assert (folder / "model.sig").read_text() != before
    assert cli("verify", str(folder), workspace=ws).returncode == 0


@pytest.mark.parametrize("tamper, named", [
    ("flip a byte of the model", "changed: model.onnx"),
    ("edit a metric in the passport", "validation.max_diff"),
    ("edit a golden output", "changed: golden/outputs.npz"),
    ("add a file", "added: notes.txt"),
])
def test_tampering_is_named(sealed, ws, tmp_path, tamper, named):
    folder = copy_of(sealed[1], tmp_path)
    if tamper == "flip a byte of the model":
        data = bytearray((folder / "model.onnx").read_bytes())
        data[len(data) // 2] ^= 0xFF
        (folder / "model.onnx").write_bytes(bytes(data))
    elif tamper == "edit a metric in the passport":
        content = json.loads((folder / "passport.json").read_text())
        content["validation"]["max_diff"] = 0.0
        (folder / "passport.json").write_text(json.dumps(content, indent=2))
    elif tamper == "edit a golden output":
        with np.load(folder / "golden" / "outputs.npz") as data:
            outputs = {k: data[k] + 1.0 for k in data.files}
        np.savez(folder / "golden" / "outputs.npz", **outputs)
    else:
        (folder / "notes.txt").write_text("not signed")
    result = cli("verify", str(folder), "--json", workspace=ws)
    assert result.returncode == 1, result.stdout
    assert named in result.stdout


def test_another_key_is_refused_and_bad_input_exits_2(sealed, ws, tmp_path):
    from cryptography.hazmat.primitives.asymmetric import ec

    other = tmp_path / "other.pem"
    other.write_bytes(passport.public_pem(ec.generate_private_key(ec.SECP256R1())))
    result = cli("verify", str(sealed[1]), "--public-key", str(other), workspace=ws)
    assert result.returncode == 1 and "another key" in result.stdout
    assert cli("verify", str(tmp_path / "nothing-here"), workspace=ws).returncode == 2
    (tmp_path / "unsigned").mkdir()
    unsigned = cli("verify", str(tmp_path / "unsigned"), workspace=ws)
    assert unsigned.returncode == 2 and "No model.sig" in unsigned.stderr


def test_rerun_catches_a_changed_weight_signed_again(ws):
    """One weight changed and everything signed again (the record's files updated): the signature, the files and
    the passport all hold — only the golden samples, run again, show the file no longer computes what it did. The
    weight is the classifier's bias, so the change reaches the logits whatever the demo learned (one element of a
    conv weight reached nothing on a demo trained with another seed: its channel was dead after ReLU)."""
    record = export_checkpoint(Workspace(ws), ExportRequest(PROJECT, EXPERIMENT, options={"evaluate": False}))
    store, _ = find_export(Workspace(ws), record.id)
    path = store.export_dir(record.id) / "model.onnx"
    model = onnx.load(str(path))
    classes = len(Workspace(ws).project(PROJECT).meta["class_names"])
    weight = next(t for t in model.graph.initializer if list(t.dims) == [classes])  # the last Gemm's bias
    values = numpy_helper.to_array(weight).copy()
    values.flat[0] += 10.0
    weight.CopyFrom(numpy_helper.from_array(values, weight.name))
    onnx.save(model, str(path))
    store.update(record.id, files=[{"name": "model.onnx", "size_bytes": path.stat().st_size,
                                    "sha256": file_sha256(path)}])  # sealed again, as a forger with the key would
    assert cli("verify", str(path.parent), workspace=ws).returncode == 0
    rerun = cli("verify", str(path.parent), "--rerun", workspace=ws)
    assert rerun.returncode == 1 and "output logits differs" in rerun.stdout, rerun.stdout


def test_reproduce_reports_what_it_found_and_refuses_a_changed_checkpoint(sealed, ws, tmp_path):
    result = cli("reproduce", str(sealed[1]), "--json", workspace=ws)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["verdict"] in ("byte-identical", "equivalent") and found["reason"]
    if found["verdict"] == "equivalent":  # ONNX stamps the export's id in its metadata
        assert "export_id" in found["reason"] and "initializers with the same digests" in found["reason"]
    checkpoint = Workspace(ws).project(PROJECT).experiment(EXPERIMENT).checkpoint("best").path
    saved = tmp_path / "best.ckpt"
    shutil.copy(checkpoint, saved)
    checkpoint.unlink()
    try:
        checkpoint.write_bytes(saved.read_bytes() + b"\0")  # another file now (a new inode: the demo is linked)
        refused = cli("reproduce", str(sealed[1]), workspace=ws)
    finally:
        checkpoint.unlink()
        shutil.copy(saved, checkpoint)
    assert refused.returncode == 2 and "has changed since" in refused.stderr
