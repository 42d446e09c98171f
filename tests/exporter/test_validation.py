"""Validation must be honest: degenerate references are inconclusive, wrong files fail."""

from __future__ import annotations

import shutil

import numpy as np
import torch

from exporter import ExportRequest, Workspace, export_checkpoint
from exporter.formats.onnx import OrtRunner
from exporter.validation import diff_histogram, input_pool, validate
from tests.helpers import classifier_checkpoint, write_experiment


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
