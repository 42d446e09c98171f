"""The one export path end to end on the demo workspace, and every bad input."""

from __future__ import annotations

import json
import threading

import numpy as np
import onnxruntime as ort
import pytest
import torch

from exporter import ExportRequest, Workspace, export_checkpoint
from exporter.errors import FormatUnavailableError, InvalidOptionError, NotFoundError, UnknownFormatError
from exporter.store import ExportStore
from testkit.models import classifier_checkpoint, write_experiment
from tests.conftest import read_index
from tests.helpers import DEMO, record_fields


def independent_max_diff(root, project_id, experiment_id, onnx_path) -> float:
    """Recompute |PyTorch - ORT| from scratch on the project's sample images."""
    from exporter.checkpoint import load_checkpoint, load_weights
    from exporter.models import ModelSpec
    from exporter.tasks import get_task
    from exporter.validation import load_images

    ws = Workspace(root)
    project = ws.project(project_id)
    experiment = project.experiment(experiment_id)
    ckpt = load_checkpoint(experiment.checkpoint("best").path)
    spec = ModelSpec.resolve(ckpt.hyper_parameters, experiment.model)
    task = get_task(spec.task)
    model = task.build(spec)
    load_weights(model, ckpt.state_dict)
    module = task.wrap(model, spec)
    images = load_images(project.sample_images(), spec.input_size, spec.normalization)
    with torch.no_grad():
        reference = [t.numpy() for t in module(images)]
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": images.numpy()})
    return max(float(np.abs(r - g).max()) for r, g in zip(reference, got, strict=True))


@pytest.mark.parametrize("project_id, experiment_id", DEMO)
def test_demo_round_trip(demo_ws, project_id, experiment_id):
    record = export_checkpoint(Workspace(demo_ws), ExportRequest(project_id, experiment_id)).to_json()
    assert record["status"] == "completed", record["error"]
    validation = record["validation"]
    assert validation["verdict"] == "passed" and validation["passed"] is True
    assert validation["batch_sizes"] == [1, 2] and validation["inputs"] == "samples+random"
    for key in ("id", "project_id", "experiment_id", "checkpoint", "format", "options", "status", "progress",
                "created_at", "started_at", "finished_at", "output_file", "files", "output_size_mb", "model",
                "validation", "timings_s", "error"):
        assert key in record
    assert set(record["timings_s"]) >= {"load", "build", "export", "simplify", "validate", "store"}
    assert record["progress"] == {"stage": "done", "fraction": 1.0}
    folder = demo_ws / "projects" / project_id / "exports" / record["id"]
    # the file, its record and its passport (passport.json, golden samples, model.sig): nothing else
    assert sorted(p.name for p in folder.iterdir()) == ["export.json", "golden", "model.onnx", "model.sig",
                                                        "passport.json"]
    assert json.loads((folder / "export.json").read_text()) == record
    index = read_index(demo_ws, project_id)
    assert [e["id"] for e in index] == [record["id"]] and index[0]["validation"]["passed"] is True
    # The recorded max diff agrees with an independent recomputation.
    independent = independent_max_diff(demo_ws, project_id, experiment_id, folder / "model.onnx")
    assert independent <= validation["outputs"][0]["allowed_abs_diff"]
    assert independent <= max(validation["max_diff"] * 10, 1e-5)


def test_requests_that_cannot_start_write_nothing(demo_ws):
    ws = Workspace(demo_ws)
    cases = [
        (ExportRequest("nope", "x"), NotFoundError, "No project 'nope'"),
        (ExportRequest("demo-classification", "nope"), NotFoundError, "known: exp-resnet18-shapes"),
        (ExportRequest("demo-classification", "exp-resnet18-shapes", checkpoint="epoch3"), NotFoundError,
         "available: best, last"),
        (ExportRequest("../../etc", "x"), NotFoundError, "not valid"),
        (ExportRequest("demo-classification", "exp-resnet18-shapes", format="rknn"), UnknownFormatError,
         "known formats: onnx"),
        (ExportRequest("demo-classification", "exp-resnet18-shapes", format="tensorrt"), FormatUnavailableError,
         "install the tensorrt package"),
        (ExportRequest("demo-classification", "exp-resnet18-shapes", options={"opset_version": 3}),
         InvalidOptionError, "out of range"),
    ]
    for request, error, text in cases:
        with pytest.raises(error, match=text) as info:
            export_checkpoint(ws, request)
        assert info.value.exit_code == 2
    assert not (demo_ws / "projects/demo-classification/exports").exists() or \
        read_index(demo_ws, "demo-classification") == []


@pytest.mark.parametrize("case, error_type, text", [
    ("corrupt", "CheckpointError", "truncated or corrupt"),
    ("empty", "CheckpointError", "empty"),
    ("unknown_architecture", "ArchitectureError", "Unknown architecture 'resnet19'"),
    ("wrong_num_classes", "StateDictMismatchError", "fc.weight: checkpoint"),
    ("bad_input_channels", "InvalidOptionError", "channels"),
])
def test_failures_leave_a_failed_record_and_no_file(tmp_path, case, error_type, text):
    options = {}
    if case in ("corrupt", "empty"):
        path = classifier_checkpoint(tmp_path)
        path.write_bytes(path.read_bytes()[:1000] if case == "corrupt" else b"")
    elif case == "unknown_architecture":
        classifier_checkpoint(tmp_path, hparams={"architecture": "resnet19"})
    elif case == "wrong_num_classes":
        classifier_checkpoint(tmp_path, hparams={"num_classes": 10})
    else:
        classifier_checkpoint(tmp_path)
        options = {"input_shape": "1,1,64,64"}
    record = export_checkpoint(Workspace(tmp_path), ExportRequest("proj", "exp", options=options)).to_json()
    assert record["status"] == "failed"
    assert record["error"]["type"] == error_type and text in record["error"]["message"]
    folder = tmp_path / "projects/proj/exports" / record["id"]
    assert sorted(p.name for p in folder.iterdir()) == ["export.json"]
    index = read_index(tmp_path, "proj")
    assert index[0]["status"] == "failed"


def test_unsupported_op_at_opset_fails_with_the_exporter_reason(tmp_path):
    """grid_sample has no ONNX form before opset 16: the legacy exporter must say so, in one line."""
    from exporter.tasks import Task, TaskTraits, register_task

    class Warp(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 2, 3, padding=1)

        def forward(self, input):
            grid = torch.tanh(self.conv(input)).permute(0, 2, 3, 1)
            return (torch.nn.functional.grid_sample(input, grid, align_corners=False),)

    @register_task
    class WarpTask(Task):
        traits = TaskTraits("test_warp", outputs=("output",))

        def architectures(self):
            return ["warp"]

        def build(self, spec):
            return Warp()

        def wrap(self, model, spec, options=None):
            return model.eval()

    write_experiment(tmp_path, Warp().state_dict(), task="test_warp",
                     hparams={"task": "test_warp", "architecture": "warp", "input_size": [3, 16, 16]})
    record = export_checkpoint(Workspace(tmp_path), ExportRequest("proj", "exp", options={
        "opset_version": 11, "exporter": "legacy"})).to_json()
    assert record["status"] == "failed"
    assert record["error"]["type"] == "ExporterError" and record["error"]["stage"] == "export"
    assert "grid_sampler" in record["error"]["message"] and "opset" in record["error"]["message"]
    assert "\n" not in record["error"]["message"]
    ok = export_checkpoint(Workspace(tmp_path), ExportRequest("proj", "exp", options={"opset_version": 16})).to_json()
    assert ok["status"] == "completed" and ok["validation"]["verdict"] == "passed"


def test_concurrent_writers_keep_the_index_consistent(tmp_path):
    classifier_checkpoint(tmp_path)
    store = ExportStore.for_project(Workspace(tmp_path), "proj")
    ids: list[str] = []

    def create():
        for _ in range(10):
            record = store.create(**record_fields(status="pending"))
            store.update(record.id, status="completed")
            ids.append(record.id)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    index = read_index(tmp_path, "proj")
    assert len(set(ids)) == 40 and sorted(e["id"] for e in index) == sorted(ids)
    assert all(e["status"] == "completed" for e in index)


def test_corrupt_index_is_rebuilt_from_records(tmp_path):
    classifier_checkpoint(tmp_path)
    store = ExportStore.for_project(Workspace(tmp_path), "proj")
    first = store.create(**record_fields(status="completed", created_at="1"))
    store.index_path.write_text("{not json")
    assert [e["id"] for e in store.list()] == [first.id]
    second = store.create(**record_fields(created_at="2"))
    assert [e["id"] for e in read_index(tmp_path, "proj")] == [first.id, second.id]
    store.delete(first.id)
    assert [e["id"] for e in read_index(tmp_path, "proj")] == [second.id]
    with pytest.raises(NotFoundError):
        store.get(first.id)
