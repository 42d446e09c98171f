"""ONNX export round trips through the real pipeline: torch → onnx → ONNX Runtime."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from exporter import ExportRequest, Workspace, export_checkpoint
from testkit.models import classifier_checkpoint

# One builder per kind of graph (squeeze-excitation + hardswish, channel shuffle, dense concat, aux-head tuples,
# LayerNorm); every builder of every task at two sizes is `make matrix` (bench/results/matrix.md).
MATRIX = ["mobilenet_v3_large", "shufflenet_v2_x0_5", "densenet121", "googlenet", "convnext_tiny"]


def export(root, **options):
    return export_checkpoint(Workspace(root), ExportRequest("proj", "exp", options=options)).to_json()


def assert_passed(record):
    assert record["status"] == "completed", record["error"]
    assert record["validation"]["verdict"] == "passed", record["validation"]
    assert record["validation"]["batch_sizes"] == [1, 2]


@pytest.mark.slow
@pytest.mark.parametrize("architecture", MATRIX)
def test_classification_matrix(tmp_path, architecture):
    classifier_checkpoint(tmp_path, architecture, num_classes=7, size=64)
    record = export(tmp_path)
    assert_passed(record)
    path = tmp_path / "projects/proj/exports" / record["id"] / "model.onnx"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        (out,) = session.run(None, {"input": np.random.rand(batch, 3, 64, 64).astype(np.float32)})
        assert out.shape == (batch, 7)


@pytest.mark.slow
def test_vit_exports_at_its_trained_size(tmp_path):
    classifier_checkpoint(tmp_path, "vit_b_16", num_classes=3, size=32)
    assert_passed(export(tmp_path))


def test_metadata_and_record(tmp_path):
    classifier_checkpoint(tmp_path, hparams={"class_names": ["a", "b", "c", "d", "e"]})
    record = export(tmp_path)
    assert_passed(record)
    model = onnx.load(str(tmp_path / "projects/proj/exports" / record["id"] / "model.onnx"))
    props = {p.key: p.value for p in model.metadata_props}
    assert props["task"] == "classification" and props["architecture"] == "resnet18"
    assert json.loads(props["class_names"]) == ["a", "b", "c", "d", "e"]
    assert json.loads(props["input_size"]) == [3, 64, 64]
    assert props["checkpoint_sha256"] == record["checkpoint_sha256"]
    assert props["exporter_version"].startswith("aistudio-export")
    assert not any(k.startswith("onnxsim") for k in props)
    assert record["model"]["inputs"] == [{"name": "input", "shape": ["batch", 3, 64, 64], "dtype": "float32"}]
    assert record["model"]["opset"] == 17
    assert record["environment"]["onnxruntime"] and record["environment"]["ir_version"]
    assert record["files"][0]["name"] == "model.onnx" and len(record["files"][0]["sha256"]) == 64


@pytest.mark.parametrize("opset", [11, 13, 20])
def test_legacy_opsets(tmp_path, opset):
    classifier_checkpoint(tmp_path, "mobilenet_v3_small")
    record = export(tmp_path, opset_version=opset)
    assert_passed(record)
    assert record["model"]["opset"] == opset and record["model"]["exporter"] == "legacy"


def test_opset_above_legacy_range_uses_dynamo(tmp_path):
    classifier_checkpoint(tmp_path, "resnet18", size=32)
    record = export(tmp_path, opset_version=21)
    assert_passed(record)
    assert record["model"]["exporter"] == "dynamo" and record["model"]["opset"] == 21


def test_dynamo_exporter_keeps_dynamic_batch(tmp_path):
    classifier_checkpoint(tmp_path, "resnet18", size=32)
    record = export(tmp_path, exporter="dynamo", opset_version=18)
    assert_passed(record)
    assert record["model"]["inputs"][0]["shape"][0] not in (1, 2)


def test_static_batch_is_validated_at_its_own_size(tmp_path):
    classifier_checkpoint(tmp_path)
    record = export(tmp_path, dynamic_batch=False, input_shape="3,3,64,64")
    assert record["validation"]["batch_sizes"] == [3]
    assert record["model"]["inputs"][0]["shape"] == [3, 3, 64, 64]
    assert record["validation"]["verdict"] == "passed"


def test_no_simplify(tmp_path):
    classifier_checkpoint(tmp_path)
    simplified = export(tmp_path)
    raw = export(tmp_path, simplify=False)
    assert_passed(raw)
    assert "simplify" not in raw["timings_s"]
    assert raw["model"]["node_count"] >= simplified["model"]["node_count"]


def test_external_data_is_one_file_beside_the_model(tmp_path):
    classifier_checkpoint(tmp_path)
    record = export(tmp_path, external_data="always")
    assert_passed(record)
    assert [f["name"] for f in record["files"]] == ["model.onnx", "model.onnx.data"]
    folder = tmp_path / "projects/proj/exports" / record["id"]
    assert (folder / "model.onnx").stat().st_size < 100_000 < (folder / "model.onnx.data").stat().st_size
    onnx.checker.check_model(str(folder / "model.onnx"))


def test_batch_baked_into_the_graph_fails_validation(tmp_path):
    """A file that only works at its export batch size must fail, whatever it declares."""
    import torch

    from exporter.tasks import Task, TaskTraits, register_task

    class Flatten1(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)

        def forward(self, input):
            out = self.conv(input)
            return (out.reshape(int(out.shape[0]), -1).sum(1) + out.mean(),)

    @register_task
    class Baked(Task):
        traits = TaskTraits("test_baked_batch", outputs=("output",))

        def architectures(self):
            return ["flatten1"]

        def build(self, spec):
            return Flatten1()

        def wrap(self, model, spec, options=None):
            return model.eval()

    from testkit.models import lively_init, write_experiment

    sd = lively_init(Flatten1()).state_dict()
    write_experiment(tmp_path, sd, task="test_baked_batch",
                     hparams={"task": "test_baked_batch", "architecture": "flatten1", "input_size": [3, 16, 16]})
    record = export(tmp_path, exporter="legacy")
    assert record["status"] == "completed"
    assert record["validation"]["verdict"] == "failed"
    assert any("batch 2" in m for m in record["validation"]["messages"])


def test_vgg_and_alexnet_at_small_sizes_export_through_the_exact_pooling_rewrite(tmp_path):
    """AdaptiveAvgPool2d((7, 7)) on a 1×1 map (vgg11 at 32 px) and ((6, 6)) on 1×1 (alexnet at 64 px): the
    legacy exporter refuses both; rewritten as constant averaging matrices they export and validate."""
    for architecture, size, pooled in (("vgg11", 32, "1×1 → 7×7"), ("alexnet", 64, "1×1 → 6×6")):
        root = tmp_path / architecture
        classifier_checkpoint(root, architecture, num_classes=10, size=size)
        record = export(root)
        assert_passed(record)
        assert record["warnings"] == [f"rewrote AdaptiveAvgPool2d at `model.avgpool` ({pooled} at input {size}×{size})"
                                      " as two constant averaging matrices — exact, at this input size only"]
        assert record["model"]["op_types"].get("MatMul", 0) >= 2
        shutil.rmtree(root)  # vgg11's checkpoint and file are 0.5 GB each


def test_an_operator_the_exporter_lacks_is_named_with_its_module(tmp_path):
    import torch

    from exporter.errors import ExporterError
    from exporter.formats import ExportJob
    from exporter.formats.onnx import OnnxFormat
    from exporter.models import ModelSpec

    class Bessel(torch.nn.Module):
        def forward(self, x):
            return torch.special.i0(x)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = torch.nn.Conv2d(3, 4, 3)
            self.head = torch.nn.Sequential(torch.nn.ReLU(), Bessel(), torch.nn.AdaptiveAvgPool2d(1),
                                            torch.nn.Flatten())

        def forward(self, input):
            return (self.head(self.stem(input)),)

    options = {spec.name: spec.default for spec in OnnxFormat.format_options}
    job = ExportJob(module=Net().eval(), spec=ModelSpec("classification", "custom"), input_shape=(1, 3, 32, 32),
                    dynamic_batch=True, input_names=("input",), output_names=("logits",), options=options, metadata={})
    with pytest.raises(ExporterError) as caught:
        OnnxFormat().export(job, tmp_path, lambda _: None)
    assert caught.value.message.startswith(
        "torch.onnx could not export custom at opset 17 — aten::i0 in `head.1` (Bessel, input [1, 4, 30, 30]) cannot "
        "be exported at input 32×32: Exporting the operator 'aten::i0' to ONNX opset version 17 is not supported. "
        "What to do: try exporter=dynamo with opset_version ≥ 18")
    assert "Torch IR graph" not in caught.value.message
