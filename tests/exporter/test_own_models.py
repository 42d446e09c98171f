"""Bring any model: the user's own model code (``--model-code``), code-free programs (``.pt2``, TorchScript) and
the refusal of pickled models (an Ultralytics YOLO ``.pt``) with the commands that turn them into a source we take."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from exporter import ExportRequest, Workspace, export_checkpoint
from exporter.dataset_attach import attach_dataset
from tests.helpers import cli, user_class

USER_MODELS = Path(__file__).resolve().parents[1] / "fixtures" / "user_models"
SCENE_CLASSES = "background,circle,square,triangle"


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def user_model(name: str, tmp_path: Path) -> Path:
    """A copy of a user model file in a folder of the test's own: the import must not depend on it afterwards."""
    folder = tmp_path / "user-code"
    folder.mkdir(exist_ok=True)
    return Path(shutil.copy(USER_MODELS / name, folder / name))


def exported(root: Path, project: str, experiment: str, fmt: str, **options) -> dict:
    record = export_checkpoint(Workspace(root), ExportRequest(project, experiment, format=fmt, options=options))
    assert record.status == "completed", record.error
    assert record.validation.verdict == "passed", record.validation
    return record.model_dump()


def test_own_detector_code_imports_exports_validates_and_evaluates(tmp_path, demo_full_template):
    """A detector from the user's own file (no torchvision builder) through ``--model-code``: the code is copied
    into the project with its sha256, then exported to ONNX and TorchScript from that copy alone (the user's file
    is gone), validated, and evaluated on a COCO labelled set."""
    weights, code = _detector_weights(tmp_path)
    root = tmp_path / "ws"
    result = cli("import", str(weights), "--project", "mine", "--create-project", "--task",
                 "object_detection", "--model-code", f"{code}:TinyDetector", "--class-names", SCENE_CLASSES,
                 "--input-size", "3,128,128", "--json", workspace=root)
    assert result.returncode == 0, result.stderr
    experiment = json.loads(result.stdout)
    sha = hashlib.sha256(b"tiny_detector.py\0" + code.read_bytes() + b"\0").hexdigest()
    assert experiment["model"]["architecture"] == "code/TinyDetector"
    assert experiment["model"]["code_sha256"] == experiment["source"]["model_code"]["sha256"] == sha
    assert (root / "projects/mine/code" / sha[:12] / "tiny_detector.py").read_bytes() == code.read_bytes()
    code.unlink()
    attach_dataset(Workspace(root), "mine", demo_full_template / "projects/demo-detection/data/val")
    for fmt in ("onnx", "torchscript"):
        record = exported(root, "mine", experiment["id"], fmt)
        assert record["model"]["code_sha256"] == sha
        assert record["evaluation"]["status"] == "completed", record["evaluation"]
        assert "map" in record["evaluation"]["file"] and "map" in record["evaluation"]["pytorch"]


def test_own_lightning_segmenter_takes_its_saved_hyper_parameters(tmp_path, demo_full_template):
    """A LightningModule trained two steps by Lightning itself: its checkpoint's saved hyper-parameters become the
    class's kwargs; ONNX and TorchScript validate and evaluate on a mask set."""
    import lightning

    code = user_model("tiny_segmenter.py", tmp_path)
    segmenter = user_class(code, "TinySegmenter")
    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.rand(4, 3, 128, 128), torch.randint(0, 4, (4, 128, 128)))
    trainer = lightning.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", default_root_dir=tmp_path)
    trainer.fit(segmenter(num_classes=4, width=6), torch.utils.data.DataLoader(data, batch_size=2))
    trainer.save_checkpoint(tmp_path / "segmenter.ckpt")
    root = tmp_path / "ws"
    result = cli("import", str(tmp_path / "segmenter.ckpt"), "--project", "seg", "--create-project", "--task",
                 "segmentation", "--model-code", "tiny_segmenter.py:TinySegmenter", "--code-root", str(code.parent),
                 "--class-names", SCENE_CLASSES, "--input-size", "3,128,128", "--json", workspace=root)
    assert result.returncode == 0, result.stderr
    experiment = json.loads(result.stdout)
    ckpt = torch.load(root / "projects/seg/experiments" / experiment["id"] / "checkpoints/best.ckpt",
                      weights_only=True)
    assert ckpt["hyper_parameters"]["model_code"]["kwargs"] == {"num_classes": 4, "width": 6}
    attach_dataset(Workspace(root), "seg", demo_full_template / "projects/demo-segmentation/data/val")
    for fmt in ("onnx", "torchscript"):
        record = exported(root, "seg", experiment["id"], fmt)
        assert record["evaluation"]["status"] == "completed", record["evaluation"]


@pytest.mark.parametrize(("name", "entry", "text"), [
    ("broken_model.py", "Broken", "broken_model.py:5 in <module>: NameError"),
    ("wrong_outputs.py", "OneScore", "expected logits [1, 3]"),
])
def test_code_that_fails_or_breaks_the_contract_is_refused_with_nothing_written(tmp_path, name, entry, text):
    root = tmp_path / "ws"
    (root / "projects").mkdir(parents=True)
    before = snapshot(root)
    weights = tmp_path / "weights.pt"
    torch.save({"head.weight": torch.zeros(1, 3), "head.bias": torch.zeros(1)}, weights)
    result = cli("import", str(weights), "--project", "p", "--create-project", "--model-code",
                 f"{USER_MODELS / name}:{entry}", "--class-names", "a,b,c", "--input-size", "3,32,32", workspace=root)
    assert result.returncode != 0
    assert text in result.stderr, result.stderr
    assert snapshot(root) == before and not (root / "projects" / "p").exists()


def _programs(tmp_path: Path) -> dict[str, Path]:
    """A small classifier saved as a ``.pt2`` (with its task and classes in ``aistudio.json``) and as TorchScript
    (without: the user names them)."""
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 3)).eval()
    example = torch.rand(1, 3, 64, 64)
    meta = json.dumps({"task": "classification", "class_names": ["circle", "square", "triangle"]})
    torch.export.save(torch.export.export(model, (example,)), tmp_path / "classifier.pt2",
                      extra_files={"aistudio.json": meta})
    torch.jit.save(torch.jit.trace(model, example), tmp_path / "classifier.torchscript")
    return {"pt2": tmp_path / "classifier.pt2", "torchscript": tmp_path / "classifier.torchscript"}


def test_pt2_and_torchscript_programs_import_without_code(tmp_path):
    """Each program is its own reference: ONNX and an edge format validate against it (the ``.pt2``, exported for
    batch 1, makes batch-1 files and refuses a dynamic batch); the formats made with torch.export refuse
    TorchScript, saying what to import instead."""
    from exporter.errors import FormatUnavailableError, InvalidOptionError

    programs, root = _programs(tmp_path), tmp_path / "ws"
    result = cli("import", str(programs["pt2"]), "--project", "programs", "--create-project", "--json",
                 workspace=root)
    assert result.returncode == 0, result.stderr
    pt2 = json.loads(result.stdout)
    assert {"architecture": "program/pt2", "input_size": [3, 64, 64], "fixed_batch": 1,
            "class_names": ["circle", "square", "triangle"]}.items() <= pt2["model"].items()
    result = cli("import", str(programs["torchscript"]), "--project", "programs", "--task", "classification",
                 "--class-names", "circle,square,triangle", "--json", workspace=root)
    assert result.returncode != 0 and "--input-size" in result.stderr
    result = cli("import", str(programs["torchscript"]), "--project", "programs", "--class-names",
                 "circle,square,triangle", "--input-size", "3,64,64", "--json", workspace=root)
    assert result.returncode == 0, result.stderr
    script = json.loads(result.stdout)
    for fmt in ("onnx", "executorch"):
        assert exported(root, "programs", pt2["id"], fmt)["model"]["input_shape"][0] == 1
    with pytest.raises(InvalidOptionError, match="batch of 1 only"):
        exported(root, "programs", pt2["id"], "onnx", dynamic_batch=True)
    for fmt in ("onnx", "ncnn"):
        exported(root, "programs", script["id"], fmt)
    with pytest.raises(FormatUnavailableError, match="cannot trace a TorchScript program"):
        exported(root, "programs", script["id"], "litert")


def test_a_yolo_pickle_is_refused_with_the_commands_that_make_a_source(tmp_path):
    """A ``.pt`` that pickles an ``ultralytics`` class (as YOLO's do) is never unpickled: the refusal gives
    Ultralytics' export command and our import of its result."""
    package = tmp_path / "fake" / "ultralytics" / "nn"
    package.mkdir(parents=True)
    (package.parent / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "tasks.py").write_text("import torch\n\nclass DetectionModel(torch.nn.Module):\n"
                                      "    def __init__(self):\n        super().__init__()\n"
                                      "        self.conv = torch.nn.Conv2d(3, 4, 3)\n")
    sys.path.insert(0, str(tmp_path / "fake"))
    try:
        from ultralytics.nn.tasks import DetectionModel

        torch.save({"model": DetectionModel(), "epoch": 3}, tmp_path / "best.pt")
    finally:
        sys.path.remove(str(tmp_path / "fake"))
        for name in [m for m in sys.modules if m.startswith("ultralytics")]:
            del sys.modules[name]
    root = tmp_path / "ws"
    result = cli("import", str(tmp_path / "best.pt"), "--project", "yolo", "--create-project", workspace=root)
    assert result.returncode != 0
    assert "Ultralytics YOLO model" in result.stderr
    assert "yolo export model=best.pt format=torchscript" in result.stderr
    assert "python -m exporter import best.torchscript" in result.stderr
    assert not (root / "projects" / "yolo").exists()


def _detector_weights(tmp_path: Path) -> tuple[Path, Path]:
    """The test detector's weights (its fresh initialisation, seeded) and the copy of its code."""
    code = user_model("tiny_detector.py", tmp_path)
    torch.manual_seed(0)
    torch.save({"state_dict": user_class(code, "TinyDetector")().state_dict()}, tmp_path / "detector.pt")
    return tmp_path / "detector.pt", code


def test_api_imports_model_code_only_where_the_server_allows_it(tmp_path):
    """With ``AISTUDIO_ALLOW_MODEL_CODE=1`` the API takes the code as a multipart ``code`` file beside the
    checkpoint and the export runs from the project's copy; without it, the same request is refused with 403 and
    nothing is written (``tests/test_import.py`` sends it to a server without the flag)."""
    import httpx

    from testkit.server import running_server, wait_for

    (weights, _), root = _detector_weights(tmp_path), tmp_path / "ws"
    root.mkdir()
    with running_server(root, AISTUDIO_ALLOW_MODEL_CODE="1") as base, httpx.Client(base_url=base, timeout=120) as http:
        response = http.post("/api/projects/api-code/experiments", files={
            "file": ("detector.pt", weights.read_bytes()),
            "code": ("tiny_detector.py", (USER_MODELS / "tiny_detector.py").read_bytes())}, data={
            "create_project": "true", "task": "object_detection", "model_code": "tiny_detector.py:TinyDetector",
            "class_names": SCENE_CLASSES, "input_size": "3,128,128"})
        assert response.status_code == 201, response.text
        experiment = response.json()
        assert experiment["source"]["model_code"]["files"] == ["tiny_detector.py"]
        started = http.post("/api/export", json={"project_id": "api-code", "experiment_id": experiment["id"],
                                                 "format": "onnx"})
        assert started.status_code == 202, started.text
        record = wait_for(http, started.json()["id"])
        assert record["status"] == "completed" and record["validation"]["verdict"] == "passed", record
    assert not list((root / ".uploads").iterdir())
