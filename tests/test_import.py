"""Bring your own model: import through the CLI and the real HTTP API, then export and validate;
architecture detection from state dicts alone; hostile uploads leave the workspace unchanged."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import httpx
import pytest
import torch

from exporter import ExportRequest, Workspace, export_checkpoint
from exporter.errors import NotFoundError
from testkit.models import lively_init
from testkit.server import running_server
from tests.conftest import ROOT
from tests.helpers import cli

TIMM = ["resnet18", "efficientnet_b0", "vit_tiny_patch16_224", "convnext_atto"]


def timm_state_dict(name: str, classes: int = 4, size: int = 64) -> dict:
    import timm

    kwargs = {"img_size": size} if name.startswith("vit") else {}
    return lively_init(timm.create_model(name, pretrained=False, num_classes=classes, **kwargs)).state_dict()


def snapshot(root: Path) -> dict[str, str]:
    """Every file under the workspace with its sha256 (what "unchanged" means)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and ".uploads" not in p.parts}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Checkpoints as users bring them: Lightning (real Trainer), bare state dict, timm, hostile ones."""
    import torchvision

    folder = tmp_path_factory.mktemp("uploads")
    out = {}
    for name in TIMM:
        out[f"timm-{name}"] = folder / f"{name}.pth"
        torch.save(timm_state_dict(name), out[f"timm-{name}"])
    bare = lively_init(torchvision.models.mobilenet_v3_small(weights=None, num_classes=3))
    out["bare"] = folder / "bare_mobilenet.pt"
    torch.save({f"module.{k}": v for k, v in bare.state_dict().items()}, out["bare"])
    out["lightning"] = folder / "lightning.ckpt"
    _lightning_checkpoint(out["lightning"])
    out["zero"] = folder / "zero.ckpt"
    out["zero"].write_bytes(b"")
    out["truncated"] = folder / "truncated.ckpt"
    out["truncated"].write_bytes(out["bare"].read_bytes()[:5000])
    out["pickle"] = folder / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": _Evil()}, out["pickle"])
    return out


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/aistudio-import-pwned",))


def _lightning_checkpoint(path: Path) -> None:
    """A checkpoint written by PyTorch Lightning's own Trainer (hyper-parameters inside)."""
    import lightning_fabric  # noqa: F401 - pytorch_lightning's dependency; import fails loudly if missing
    import pytorch_lightning as pl
    import torchvision

    class Module(pl.LightningModule):
        def __init__(self, architecture="resnet18", num_classes=3, task="classification", input_size=(3, 64, 64)):
            super().__init__()
            self.save_hyperparameters()
            self.model = lively_init(torchvision.models.get_model(architecture, weights=None, num_classes=num_classes))

        def training_step(self, batch, _):
            return self.model(batch[0]).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.rand(2, 3, 64, 64)), batch_size=2)
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=str(path.parent), accelerator="cpu")
    trainer.fit(Module(), data)
    trainer.save_checkpoint(str(path))


def export_passes(root: Path, project: str, experiment: str) -> dict:
    record = export_checkpoint(Workspace(root), ExportRequest(project, experiment)).to_json()
    assert record["status"] == "completed", record["error"]
    assert record["validation"]["verdict"] == "passed", record["validation"]["messages"]
    return record


@pytest.mark.parametrize("key, expected", [
    ("lightning", "resnet18"), ("bare", "mobilenet_v3_small"),
    *[(f"timm-{n}", n) for n in ("efficientnet_b0", "vit_tiny_patch16_224")],  # the other timm families: API
])
def test_cli_import_then_export(tmp_path, files, key, expected):
    args = ["import", str(files[key]), "--project", "mine", "--create-project", "--json"]
    if not key == "lightning":
        args += ["--input-size", "3,64,64"]
    result = cli(*args, workspace=tmp_path)
    assert result.returncode == 0, result.stderr
    experiment = json.loads(result.stdout)
    assert experiment["model"]["architecture"].removeprefix("timm/") == expected
    assert experiment["model"]["num_classes"] in (3, 4)
    export_passes(tmp_path, "mine", experiment["id"])


def test_api_import_then_export_and_hostile_uploads(tmp_path, files):
    root = tmp_path / "ws"
    root.mkdir()
    with running_server(root) as base, httpx.Client(base_url=base, timeout=120) as http:
        for key in ("lightning", "timm-convnext_atto", "timm-resnet18"):  # bare and the others: the CLI test
            with files[key].open("rb") as handle:
                response = http.post("/api/projects/api-proj/experiments", files={"file": (files[key].name, handle)},
                                     data={"create_project": "true", "input_size": "3,64,64"})
            assert response.status_code == 201, response.text
            experiment = response.json()
            export_passes(root, "api-proj", experiment["id"])
        before = snapshot(root)
        hostile = [("zero", {}, "empty"), ("truncated", {}, ""), ("pickle", {}, ""),
                   ("timm-resnet18", {"architecture": "convnext_tiny"}, "")]
        for key, extra, text in hostile:
            with files[key].open("rb") as handle:
                response = http.post("/api/projects/api-proj/experiments", files={"file": (files[key].name, handle)},
                                     data={"input_size": "3,64,64", **extra})
            assert 400 <= response.status_code < 500, response.text
            message = response.json()["error"]["message"]
            assert message and text in message.lower()
            assert snapshot(root) == before, f"{key} changed the workspace"
        response = http.post("/api/projects/nope/experiments", files={"file": ("x.pt", files["bare"].read_bytes())})
        assert response.status_code == 404
        code = ROOT / "tests/fixtures/user_models/tiny_detector.py"  # model code, on a server that does not allow it
        response = http.post("/api/projects/api-proj/experiments", files={
            "file": ("x.pt", files["bare"].read_bytes()), "code": (code.name, code.read_bytes())},
            data={"model_code": "tiny_detector.py:TinyDetector"})
        assert response.status_code == 403 and "AISTUDIO_ALLOW_MODEL_CODE=1" in response.json()["error"]["message"]
        assert snapshot(root) == before
    assert not Path("/tmp/aistudio-import-pwned").exists()
    assert not list((root / ".uploads").iterdir())


def test_api_staged_upload_import_retry_and_refusals(tmp_path, files):
    """POST /api/uploads streams a raw body to disk; the staged file is imported by id, kept for a retry
    when the import fails, removed once imported; token, size limit and bad requests are refused."""
    root = tmp_path / "ws"
    root.mkdir()
    auth = {"Authorization": "Bearer t0ken"}
    body = files["bare"].read_bytes()
    chunks = lambda data: (data[i:i + 65536] for i in range(0, len(data), 65536))  # noqa: E731 - chunked, no length
    with running_server(root, AISTUDIO_API_TOKEN="t0ken", AISTUDIO_MAX_CHECKPOINT_MB="8") as base, \
            httpx.Client(base_url=base, timeout=120) as http:
        assert http.post("/api/uploads", content=body).status_code == 401
        assert http.post("/api/uploads", content=body, headers={"X-Upload-Ticket": "forged"}).status_code == 401
        response = http.post("/api/uploads", params={"filename": "../../bare.pt"}, content=chunks(body), headers=auth)
        assert response.status_code == 201, response.text
        staged = response.json()
        assert staged["size_bytes"] == len(body) and staged["filename"] == "bare.pt"
        staged_file = root / ".uploads" / staged["upload_id"] / "bare.pt"
        assert hashlib.sha256(staged_file.read_bytes()).digest() == hashlib.sha256(body).digest()

        form = {"upload_id": staged["upload_id"], "create_project": "true", "input_size": "3,64,64"}
        wrong = http.post("/api/projects/p/experiments", data={**form, "architecture": "resnet18", "num_classes": "3"},
                      headers=auth)
        assert wrong.status_code == 422, wrong.text
        assert not (root / "projects" / "p").exists() and staged_file.exists()  # kept: retry without re-sending
        imported = http.post("/api/projects/p/experiments", data=form, headers=auth)
        assert imported.status_code == 201, imported.text
        assert imported.json()["model"]["architecture"] == "mobilenet_v3_small"
        assert http.post("/api/projects/p/experiments", data=form, headers=auth).status_code == 404  # consumed
        export_passes(root, "p", imported.json()["id"])

        big = os.urandom(9 << 20)
        assert http.post("/api/uploads", content=big, headers=auth).status_code == 413  # declared length
        assert http.post("/api/uploads", content=chunks(big), headers=auth).status_code == 413  # streamed past it
        neither = http.post("/api/projects/p/experiments", data={"input_size": "3,64,64"}, headers=auth)
        assert neither.status_code == 400 and "upload_id" in neither.json()["error"]["message"]
        escape = http.post("/api/projects/p/experiments", data={"upload_id": "../../etc"}, headers=auth)
        assert escape.status_code == 404
    assert not list((root / ".uploads").iterdir())


def test_staged_uploads_older_than_a_day_are_pruned(tmp_path):
    from exporter.importer import UPLOAD_TTL_S, keep_upload, prune_uploads, receive_upload, staged_upload

    with receive_upload(tmp_path) as (path, sink):
        sink(b"x" * 10)
        old = keep_upload(tmp_path, path, "../old.pt")
    with receive_upload(tmp_path) as (path, sink):
        sink(b"y")
        fresh = keep_upload(tmp_path, path, "fresh.pt")
    stale = time.time() - UPLOAD_TTL_S - 60
    for file in (tmp_path / ".uploads").glob(f"{old['upload_id']}*"):
        os.utime(file, (stale, stale))
    prune_uploads(tmp_path)
    assert staged_upload(tmp_path, fresh["upload_id"])[0].read_bytes() == b"y"
    left = sorted(p.name for p in (tmp_path / ".uploads").iterdir())
    assert left == [fresh["upload_id"], fresh["upload_id"] + ".json"]
    with pytest.raises(NotFoundError, match="upload the file again"):
        staged_upload(tmp_path, old["upload_id"])


@pytest.fixture(scope="module")
def one_import(files, tmp_path_factory) -> Path:
    """A workspace with one imported checkpoint (copied by each test that needs it)."""
    root = tmp_path_factory.mktemp("one-import")
    cli("import", str(files["bare"]), "--project", "mine", "--create-project", "--input-size", "3,64,64",
        workspace=root)
    return root


@pytest.mark.parametrize("key, text", [("zero", "empty"), ("truncated", ""), ("pickle", ""), ("wrong", "")])
def test_cli_hostile_imports_leave_the_workspace_unchanged(tmp_path, files, one_import, key, text):
    shutil.copytree(one_import, tmp_path, dirs_exist_ok=True)
    before = snapshot(tmp_path)
    args = ["import", str(files["timm-resnet18" if key == "wrong" else key]), "--project", "mine"]
    if key == "wrong":
        args += ["--architecture", "convnext_tiny", "--num-classes", "4"]
    result = cli(*args, workspace=tmp_path)
    assert result.returncode != 0 and result.stderr.startswith("error:") and text in result.stderr.lower()
    assert len(result.stderr.strip().splitlines()) == 1
    assert snapshot(tmp_path) == before


def test_detection_names_the_right_builder_from_weights_alone():
    """Fourteen models, state dicts only (meta tensors: shapes without memory), prefixes included."""
    from exporter.models.classification import build_torchvision_classifier
    from exporter.models.recognize import detect_architecture

    cases = ["resnet18", "resnet50", "mobilenet_v3_small", "mobilenet_v2", "efficientnet_b0", "convnext_tiny",
             "densenet121", "vit_b_16", "squeezenet1_1", "shufflenet_v2_x1_0", "timm/efficientnet_b0",
             "timm/vit_tiny_patch16_224", "timm/convnext_atto", "timm/mobilenetv3_large_100"]
    # Some timm and torchvision builders write identical state dicts (resnet18): both are right.
    same = {"resnet18": {"timm/resnet18"}, "resnet50": {"timm/resnet50"}, "densenet121": {"timm/densenet121"},
            "timm/efficientnet_b0": {"timm/tf_efficientnet_b0"},
            "timm/vit_tiny_patch16_224": {"timm/deit_tiny_patch16_224"}}
    for architecture in cases:
        with torch.device("meta"):
            model = build_torchvision_classifier(architecture, 7, (3, 224, 224))
        state = {f"model.{k}": v for k, v in model.state_dict().items()}
        found = detect_architecture(state)
        best = found[0]
        assert best.architecture == architecture or best.architecture in same.get(architecture, set()), found[:2]
        assert best.confidence == 1.0 and best.num_classes == 7 and best.prefix == "model."
        if "vit" in architecture:
            assert best.input_size == (3, 224, 224)
