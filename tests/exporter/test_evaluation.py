"""Evaluation on labelled data: each task's metrics on cases worked by hand, the demo's sets read and
scored, the gate, the PyTorch cache, the CLI and API jobs, and refused layouts."""

from __future__ import annotations

import json
import math
import shutil
import time

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from exporter import ExportRequest, Workspace, export_checkpoint
from exporter.datasets import coco, image_folder, masks, polygon_to_rbox
from exporter.errors import DatasetError
from exporter.geometry import rotated_corners
from exporter.tasks import metrics
from testkit.server import running_server
from tests.conftest import read_index
from tests.helpers import DEMO, TASK_DEMOS, cli


# -- metrics on cases worked by hand -------------------------------------------------------
def test_classification_metrics_by_hand():
    logits = np.array([[3, 1, 0], [0, 2, 1], [0, 1, 2], [2, 0, 1]], np.float32)  # predicts 0, 1, 2, 0
    score = metrics.classification(logits, np.array([0, 1, 1, 2]), ["a", "b", "c"])
    assert score.metrics == {"top1_accuracy": 0.5}
    assert score.per_class == {"a": 1.0, "b": 0.5, "c": 0.0}
    assert score.extra["confusion"] == [[1, 0, 0], [0, 1, 1], [1, 0, 0]]  # rows: truth, columns: predicted


def test_regression_metrics_by_hand():
    score = metrics.regression(np.array([[1.0], [2.0]]), np.array([[1.0], [3.0]]), ["y"])
    assert score.metrics["mae"] == pytest.approx(0.5)
    assert score.metrics["rmse"] == pytest.approx(math.sqrt(0.5))
    assert score.metrics["r2"] == pytest.approx(0.5)  # 1 - (0 + 1) / ((1-2)² + (3-2)²)


def test_anomaly_metrics_by_hand():
    scores, labels = np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])
    threshold = metrics.f1_threshold(scores, labels)
    assert threshold == pytest.approx(0.35)  # flags 0.4, 0.35, 0.8: F1 = 2·2 / (3 + 2) = 0.8, the best
    score = metrics.anomaly(scores, labels, threshold)
    assert score.metrics["image_auroc"] == pytest.approx(0.75)  # 3 of the 4 (anomalous, normal) pairs rank right
    assert score.metrics["f1"] == pytest.approx(0.8)


def test_segmentation_metrics_by_hand():
    pred, target = np.array([[[0, 1], [1, 1]]]), np.array([[[0, 1], [0, 255]]])
    score = metrics.segmentation(pred, target, ["bg", "fg"], ignore_index=255)
    assert score.per_class == pytest.approx({"bg": 0.5, "fg": 0.5})
    assert score.metrics["miou"] == pytest.approx(0.5) and score.metrics["pixel_accuracy"] == pytest.approx(2 / 3)


def test_coco_map_by_hand():
    truth = [{"boxes": np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32), "labels": np.array([1, 1])}]
    found = [{"boxes": np.array([[0, 0, 10, 10]], np.float32), "scores": np.array([0.9], np.float32),
              "labels": np.array([1])}]
    score = metrics.coco(found, truth, ["background", "thing"], with_masks=False)
    # One of two objects found at perfect IoU: precision 1 up to recall 0.5 on COCO's 101 recall points.
    assert score.metrics["map_50"] == pytest.approx(51 / 101, abs=1e-3)
    assert score.per_class["thing"] == pytest.approx(51 / 101, abs=1e-3)


def test_rotated_ap_by_hand():
    gts = np.array([[20, 20, 10, 4, 0.3], [60, 60, 12, 6, -0.5], [90, 20, 8, 8, 0.0]], np.float32)
    truth = [{"boxes": gts, "labels": np.array([0, 0, 0]), "difficult": np.array([False, False, True])}]
    found = [{"boxes": np.array([gts[0], [100, 100, 5, 5, 0.0], gts[1], gts[2]], np.float32),
              "scores": np.array([0.9, 0.8, 0.7, 0.95], np.float32), "labels": np.array([0, 0, 0, 0])}]
    # Ranked: difficult hit (ignored), TP, FP, TP → recall .5 .5 1, precision 1 .5 .667;
    # all-point AP = 0.5·1 + 0.5·(2/3).
    score = metrics.rotated_ap(found, truth, ["plate"])
    assert score.metrics["map_50"] == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_dota_polygons_become_the_rotated_boxes_they_came_from():
    box = np.array([30.0, 40.0, 20.0, 6.0, 0.4])
    assert polygon_to_rbox(rotated_corners(box)) == pytest.approx(list(box))


# -- layouts refused with what to fix --------------------------------------------------------
def test_layouts_are_checked_before_anything_is_evaluated(tmp_path):
    (tmp_path / "cls" / "dragon").mkdir(parents=True)
    with pytest.raises(DatasetError, match="dragon are not among the model's classes"):
        image_folder(tmp_path / "cls", ["cat", "dog"])
    (tmp_path / "coco" / "images").mkdir(parents=True)
    with pytest.raises(DatasetError, match="annotations.json"):
        coco(tmp_path / "coco", ["background", "cat"], with_masks=False)
    _png(tmp_path / "coco" / "images" / "a.png", (8, 8))
    bad = {"images": [{"id": 1, "file_name": "a.png"}], "categories": [{"id": 1, "name": "cat"}],
           "annotations": [{"id": 7, "image_id": 1, "category_id": 3, "bbox": [0, 0, 2, 2]}]}
    (tmp_path / "coco" / "annotations.json").write_text(json.dumps(bad))
    with pytest.raises(DatasetError, match="category_id 3"):
        coco(tmp_path / "coco", ["background", "cat"], with_masks=False)
    bad["annotations"][0].update(category_id=1, segmentation=[[0, 0, 1]])
    (tmp_path / "coco" / "annotations.json").write_text(json.dumps(bad))
    with pytest.raises(DatasetError, match="broken segmentation"):
        coco(tmp_path / "coco", ["background", "cat"], with_masks=True)
    _png(tmp_path / "seg" / "images" / "a.png", (8, 8))
    _png(tmp_path / "seg" / "masks" / "a.png", (4, 4))
    with pytest.raises(DatasetError, match="masks/a.png is"):
        masks(tmp_path / "seg", 3)
    _png(tmp_path / "seg" / "masks" / "a.png", (8, 8), value=7)
    with pytest.raises(DatasetError, match=r"class id\(s\) \[7\]"):
        masks(tmp_path / "seg", 3)


def _png(path, size, value=0):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size[::-1], value, np.uint8), mode="L").save(path)


# -- the demo projects, exported and evaluated -----------------------------------------------
@pytest.mark.parametrize(("project_id", "experiment_id"), [DEMO[0], DEMO[1], DEMO[2], *TASK_DEMOS])
def test_every_demo_project_evaluates_without_a_drop(demo_eval_ws, project_id, experiment_id):
    """ONNX fp32 of every demo project: validation passes with something found on the samples, the
    evaluation's drop is ~0, and a fresh ONNX Runtime session on a sample image (preprocessed from
    the file's own metadata) reproduces PyTorch."""
    assert len(list((demo_eval_ws / "projects" / project_id / "data" / "val").rglob("*.png"))) >= 100
    record = export_checkpoint(Workspace(demo_eval_ws), ExportRequest(project_id, experiment_id,
                                                                      options={"max_images": 40}))
    assert record.validation.verdict == "passed", record.validation.messages
    task_metrics = record.validation.task_metrics
    if "matched" in task_metrics:
        assert task_metrics["sample_detections"] >= 1 and task_metrics["match_rate"] == 1.0
    elif "pixel_agreement" in task_metrics:
        assert task_metrics["pixel_agreement"] >= 0.999
    evaluation = record.evaluation
    assert evaluation is not None and evaluation.status == "completed", evaluation
    assert evaluation.dataset["images"] == 40
    primary = evaluation.primary_metric
    assert abs(evaluation.delta[primary]) <= 0.005, (primary, evaluation.pytorch, evaluation.file)
    assert evaluation.verdict == "passed", evaluation.reason
    _reproduces_pytorch(demo_eval_ws, record)


def _reproduces_pytorch(root, record) -> None:
    import torch

    from exporter.checkpoint import load_checkpoint
    from exporter.pipeline import build_wrapped
    from exporter.tasks.agreement import match_detections
    from exporter.validation import load_images

    project = Workspace(root).project(record.project_id)
    session = ort.InferenceSession(str(project.exports_dir / record.id / record.output_file),
                                   providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    images = load_images(project.sample_images()[:1], tuple(json.loads(meta["input_size"])),
                         json.loads(meta["normalization"]))
    got = session.run(None, {"input": images.numpy()})
    experiment = project.experiment(record.experiment_id)
    _, module = build_wrapped(load_checkpoint(experiment.checkpoint("best").path), experiment, options=record.options)
    with torch.no_grad():
        want = [t.numpy() for t in module(images)]
    if "matched" not in record.validation.task_metrics:  # one tensor per output, or class maps
        for ref, out in zip(want, got, strict=True):
            if ref.ndim == 4 and record.model.task == "segmentation":
                assert (ref.argmax(1) == out.argmax(1)).mean() >= 0.999
            else:
                assert np.abs(ref - out).max() <= 1e-3 * max(1.0, float(np.abs(ref).max()))
        return
    n = int(want[3][0])
    assert n >= 1 and int(got[3][0]) == n
    ref = {"boxes": want[0][0, :n], "scores": want[1][0, :n], "labels": want[2][0, :n]}
    out = {"boxes": got[0][0, :n], "scores": got[1][0, :n], "labels": got[2][0, :n]}
    assert len(match_detections(ref, out, rotated=record.model.task == "oriented_object_detection")) == n
    assert np.abs(np.sort(ref["scores"]) - np.sort(out["scores"])).max() < 1e-3


def test_classifier_accuracy_agrees_with_an_independent_recount(demo_eval_ws):
    """Top-1 accuracy recomputed from the file alone (ONNX Runtime, the file's own metadata)."""
    from PIL import Image

    record = export_checkpoint(Workspace(demo_eval_ws), ExportRequest(*DEMO[0]))
    path = demo_eval_ws / "projects" / DEMO[0][0] / "exports" / record.id / "model.onnx"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    names, norm = json.loads(meta["class_names"]), json.loads(meta["normalization"])
    c, h, w = json.loads(meta["input_size"])
    hits = total = 0
    for folder in sorted((demo_eval_ws / "projects" / DEMO[0][0] / "data" / "val").iterdir()):
        for image in sorted(folder.iterdir()):
            x = np.asarray(Image.open(image).convert("RGB").resize((w, h), Image.BILINEAR), np.float32) / 255
            x = (x - np.array(norm["mean"], np.float32)) / np.array(norm["std"], np.float32)
            (logits,) = session.run(None, {"input": x.transpose(2, 0, 1)[None].astype(np.float32)})
            hits += names[int(logits.argmax())] == folder.name
            total += 1
    assert abs(hits / total - record.evaluation.file["top1_accuracy"]) <= 0.005


def test_int8_detector_reports_its_true_drop_and_fails_a_gate_no_file_meets(demo_eval_ws):
    """A required gain of one whole mAP@.5 (a negative allowed drop) fails whatever the trained model scores: the
    one verdict is failed by the evaluation gate — in the record, the index entry and the exit code."""
    project, experiment = "demo-oriented", "exp-obb-resnet18"
    result = cli("export", "--project", project, "--experiment", experiment, "--option", "precision=int8",
                 "--option", "quantization=static", "--option", "max_metric_drop=-1", "--json",
                 workspace=demo_eval_ws)  # the whole set (100 images)
    record = json.loads(result.stdout)
    evaluation = record["evaluation"]
    drop = evaluation["pytorch"]["map_50"] - evaluation["file"]["map_50"]
    assert evaluation["drop"] == pytest.approx(drop) and evaluation["max_metric_drop"] == -1.0, evaluation
    assert evaluation["verdict"] == "failed" and result.returncode == 1
    assert record["outcome"]["verdict"] == "failed" and record["outcome"]["gate"] == "evaluation"
    assert "failed by the evaluation gate: mAP@.5 (rotated IoU)" in result.stderr, result.stderr
    entry = next(e for e in read_index(demo_eval_ws, project) if e["id"] == record["id"])
    assert (entry["verdict"], entry["gate"]) == ("failed", "evaluation")


def test_evaluate_job_cli_and_api_with_the_pytorch_cache(demo_eval_ws):
    project, experiment = DEMO[0]
    first = export_checkpoint(Workspace(demo_eval_ws), ExportRequest(project, experiment))
    assert first.evaluation.verdict == "passed"
    again = cli("evaluate", first.id, "--max-metric-drop", "0.05", "--json", workspace=demo_eval_ws)
    assert again.returncode == 0, again.stderr
    evaluated = json.loads(again.stdout)["evaluation"]
    assert evaluated["pytorch_cached"] is True and evaluated["max_metric_drop"] == 0.05
    assert evaluated["pytorch"] == first.evaluation.pytorch
    with running_server(demo_eval_ws) as base, httpx.Client(base_url=base, timeout=60) as client:
        started = client.post(f"/api/export/{first.id}/evaluate", json={"max_images": 40})
        assert started.status_code == 202 and started.json()["evaluation"]["status"] == "running"
        for _ in range(240):
            record = client.get(f"/api/export/{first.id}").json()
            if record["evaluation"]["status"] != "running":
                break
            time.sleep(0.5)
        assert record["evaluation"]["status"] == "completed" and record["evaluation"]["dataset"]["images"] == 40
        assert client.post("/api/export/export-00000000/evaluate").status_code == 404


def test_a_project_without_a_labelled_set_is_refused_with_what_to_add(demo_eval_ws, demo_full_template):
    """The refusal names the command that fixes it; following it makes the same evaluation work."""
    project, experiment = DEMO[0]
    record = export_checkpoint(Workspace(demo_eval_ws), ExportRequest(project, experiment))
    shutil.rmtree(demo_eval_ws / "projects" / project / "data" / "val")
    assert export_checkpoint(Workspace(demo_eval_ws), ExportRequest(project, experiment)).evaluation is None
    result = cli("evaluate", record.id, workspace=demo_eval_ws)
    assert result.returncode == 2 and f"python -m exporter data add --project {project} PATH" in result.stderr
    added = cli("data", "add", "--project", project, str(demo_full_template / "projects" / project / "data" / "val"),
                workspace=demo_eval_ws)
    assert added.returncode == 0, added.stderr
    again = cli("evaluate", record.id, "--max-images", "30", workspace=demo_eval_ws)
    assert again.returncode == 0, again.stderr


def test_every_task_draws_its_answers_into_the_gallery(demo_full_template, tmp_path):
    """Each demo task's PyTorch answers on two labelled images, drawn as a gallery picture."""
    from PIL import Image

    from exporter import evaluation
    from exporter.checkpoint import load_checkpoint
    from exporter.pipeline import build_wrapped
    from exporter.tasks import get_task

    workspace = Workspace(demo_full_template)
    for project_id, experiment_id in [DEMO[0], DEMO[1], DEMO[2], *TASK_DEMOS]:
        project = workspace.project(project_id)
        experiment = project.experiment(experiment_id)
        spec, module = build_wrapped(load_checkpoint(experiment.checkpoint("best").path), experiment, project.task)
        task = get_task(spec.task)
        inputs = evaluation.prepare(task, spec, {"max_images": 2}, project.path, (1, *spec.input_size))
        outputs = task.outputs({})
        reference = evaluation._predict(inputs, lambda x, m=module: [t.numpy() for t in m(evaluation._torch(x))],
                                        outputs, lambda _: None)
        result = {"disagreements": [{"image": "x", "score": 1.0, "index": 1}], "runtime": "onnx",
                  "calibration": task.calibrate(reference, inputs.valset)}
        folder = tmp_path / project_id / evaluation.GALLERY_DIR
        evaluation.write_gallery(inputs, reference, reference, result, folder)
        assert result["disagreements"][0]["thumbnail"] == "gallery/00.png"
        with Image.open(folder / "00.png") as picture:
            assert picture.width == 2 * evaluation.THUMBNAIL + 4, project_id
            left, right = (np.asarray(picture.crop((k * (evaluation.THUMBNAIL + 4), 14,
                                                   k * (evaluation.THUMBNAIL + 4) + evaluation.THUMBNAIL,
                                                   picture.height))) for k in (0, 1))
        assert np.array_equal(left, right), project_id  # the same answer is drawn the same way
        assert list(folder.parent.iterdir()) == [folder]  # built aside, renamed into place
