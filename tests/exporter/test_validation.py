"""Validation must be honest: degenerate references are inconclusive, wrong files fail."""

from __future__ import annotations

import shutil

import numpy as np
import torch

from exporter import ExportRequest, Workspace, export_checkpoint
from exporter.formats.onnx import OrtRunner
from exporter.validation import diff_histogram, input_pool, validate
from testkit.models import classifier_checkpoint, write_experiment


def test_untrained_zero_output_is_inconclusive_not_passed(tmp_path):
    import torchvision

    model = torchvision.models.resnet18(num_classes=3)
    torch.nn.init.zeros_(model.fc.weight)
    torch.nn.init.zeros_(model.fc.bias)
    write_experiment(tmp_path, model.state_dict(), wrap="bare",
                     model_meta={"architecture": "resnet18", "num_classes": 3, "input_size": [3, 32, 32]})
    record = export_checkpoint(Workspace(tmp_path), ExportRequest("proj", "exp")).to_json()
    assert record["status"] == "completed"
    assert record["validation"]["verdict"] == "inconclusive"
    assert record["validation"]["passed"] is False
    assert "untrained" in record["validation"]["outputs"][0]["problem"]


def test_nan_weights_are_reported(tmp_path):
    import torchvision

    model = torchvision.models.resnet18(num_classes=3)
    with torch.no_grad():
        model.fc.weight[0, 0] = float("nan")
    write_experiment(tmp_path, model.state_dict(), wrap="bare",
                     model_meta={"architecture": "resnet18", "num_classes": 3, "input_size": [3, 32, 32]})
    record = export_checkpoint(Workspace(tmp_path), ExportRequest("proj", "exp")).to_json()
    assert record["validation"]["verdict"] == "failed"
    assert "NaN" in record["validation"]["outputs"][0]["problem"]


def test_a_file_of_other_weights_fails(tmp_path):
    """Compare a real ONNX file against a model with different weights: must fail."""
    from exporter.checkpoint import load_checkpoint, load_weights
    from exporter.models.classification import FirstOutput, build_torchvision_classifier

    classifier_checkpoint(tmp_path / "a", seed_note := "resnet18")  # noqa: F841
    record = export_checkpoint(Workspace(tmp_path / "a"), ExportRequest("proj", "exp")).to_json()
    onnx_path = tmp_path / "a/projects/proj/exports" / record["id"] / "model.onnx"
    other = build_torchvision_classifier("resnet18", 5, (3, 64, 64))
    report = validate(FirstOutput(other).eval(), OrtRunner(onnx_path), input_name="input",
                      output_names=("logits",), pool=torch.rand(3, 3, 64, 64), pool_kind="random",
                      batch_sizes=[1, 2], tolerance=1e-4, task="classification")
    assert report.verdict == "failed" and not report.outputs[0].passed
    # and the matching model passes on the same file
    model = build_torchvision_classifier("resnet18", 5, (3, 64, 64))
    load_weights(model, load_checkpoint(tmp_path / "a/projects/proj/experiments/exp/checkpoints/best.ckpt").state_dict)
    ok = validate(FirstOutput(model).eval(), OrtRunner(onnx_path), input_name="input", output_names=("logits",),
                  pool=torch.rand(3, 3, 64, 64), pool_kind="random", batch_sizes=[1, 2], tolerance=1e-4,
                  task="classification")
    assert ok.verdict == "passed" and ok.task_metrics["top1_agreement"] == 1.0
    shutil.rmtree(tmp_path / "a")


def test_input_pool_uses_samples_then_random(demo_template):
    samples = sorted((demo_template / "projects/demo-classification/data/samples").glob("*.png"))
    pool, kind = input_pool(samples, (3, 64, 64), {"mean": [0.5] * 3, "std": [0.25] * 3})
    assert kind == "samples+random" and pool.shape == (len(samples) + 2, 3, 64, 64)
    assert float(pool[0].min()) >= -2.0 and float(pool[0].max()) <= 2.0
    _, kind = input_pool([], (3, 8, 8), {})
    assert kind == "random"


def test_histogram_counts_every_diff():
    diff = np.array([0.0, 0.0, 1e-9, 3e-7, 2e-3])
    hist = diff_histogram(diff)
    assert sum(hist["counts"]) == 3 and hist["exact_zero"] == [2]
    assert len(hist["edges"]) == len(hist["counts"]) + 1


def test_float64_referee_passes_rounding_and_fails_a_corrupted_weight(tmp_path):
    """efficientnet_v2_s with weights that amplify float32 rounding: PyTorch float32 itself is off the float64
    answer by more than the tolerance, so the file passes on the referee; the same file with one weight tensor
    scaled by 1 % fails it."""
    import onnx
    from onnx import numpy_helper

    from exporter.pipeline import recheck
    from exporter.store import ExportStore

    classifier_checkpoint(tmp_path, "efficientnet_v2_s", num_classes=10, size=64, gain=0.8805)
    workspace = Workspace(tmp_path)
    record = export_checkpoint(workspace, ExportRequest("proj", "exp"))
    validation = record.validation
    (logits,) = validation.outputs
    assert validation.verdict == "passed", validation
    assert logits.max_abs_diff > logits.allowed_abs_diff  # against PyTorch float32 it misses the tolerance
    referee = logits.referee
    assert referee.passed and referee.file_error <= 4 * referee.torch_float32_error
    assert referee.torch_float32_error > logits.allowed_abs_diff  # PyTorch float32 misses it too
    assert validation.referee == (f"within float32 rounding — logits: PyTorch float32 differs from the float64 "
                                  f"result by {referee.torch_float32_error:.3g}, the file by {referee.file_error:.3g}")

    store = ExportStore(workspace.project("proj"))
    model = onnx.load(str(store.export_dir(record.id) / "model.onnx"))
    classifier = [t for t in model.graph.initializer if len(t.dims) == 2][-1]  # the last Linear's weight
    classifier.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(classifier) * np.float32(1.01), classifier.name))
    onnx.save(model, str(tmp_path / "corrupted.onnx"))
    report, _ = recheck(workspace, store, record, OrtRunner(tmp_path / "corrupted.onnx"), tolerance=None,
                        min_agreement=None, runtime="onnx")
    (logits,) = report.outputs
    assert report.verdict == "failed" and not logits.referee["passed"]
    assert logits.referee["file_error"] > logits.referee["allowed"]
    assert report.referee.startswith("the file is further from the float64 result than 4× PyTorch float32's own")


def test_float64_run_leaves_the_model_as_it_was():
    from exporter.validation import run_float64

    shared = torch.nn.Conv2d(3, 3, 1)
    model = torch.nn.Sequential(shared, torch.nn.BatchNorm2d(3), shared)
    model.register_buffer("grid", torch.linspace(0, 1, 5, dtype=torch.float64))
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    (out,) = run_float64(_Tuple(model), torch.rand(2, 3, 4, 4))
    assert out.dtype == np.float64
    for name, value in model.state_dict().items():
        assert value.dtype == before[name].dtype and torch.equal(value, before[name]), name


class _Tuple(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return (self.inner(x),)


def test_the_referee_explains_task_misses_only_within_its_multiple():
    """Near-tied detector scores pick other boxes in PyTorch float32 too (random-weight fasterrcnn_mobilenet_v3:
    PyTorch float32 matches 95.3 % of the float64 detections, the file 94.8 %)."""
    from exporter.validation import _misses_explained

    torch32 = {"match_rate": 0.953, "unmatched_reference": 0.0, "unmatched_exported": 0.0}
    explained, lines = _misses_explained(torch32, {**torch32, "match_rate": 0.948})
    assert explained and lines == ["match rate: PyTorch float32 95.3%, the file 94.8% of the float64 result"]
    assert not _misses_explained(torch32, {**torch32, "match_rate": 0.75})[0]  # misses 25 % > 4 × 4.7 %
    assert not _misses_explained(torch32, {**torch32, "match_rate": 0.953, "unmatched_exported": 3.0})[0]
    assert _misses_explained({"top1_agreement": 1.0}, {"top1_agreement": 1.0})[0]
