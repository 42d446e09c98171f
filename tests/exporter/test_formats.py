"""Formats beyond ONNX FP32: each validated by running the file on its own runtime."""

from __future__ import annotations

import subprocess
import sys

import pytest

from exporter import ExportRequest, Workspace, export_checkpoint
from exporter.errors import FormatUnavailableError
from exporter.formats import get_available_formats, get_format
from tests.helpers import DEMO, TASK_DEMOS

CLS = ("demo-classification", "exp-resnet18-shapes")
# What a format cannot carry, declared in its availability for the task (not a late failure).
CANNOT = {("openvino", "demo-instance-segmentation")}


def export(root, project, experiment, fmt, **options):
    request = ExportRequest(project, experiment, format=fmt, options=options)
    record = export_checkpoint(Workspace(root), request).to_json()
    assert record["status"] == "completed", record["error"]
    return record


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["torchscript", "openvino"])
@pytest.mark.parametrize("project, experiment", DEMO + TASK_DEMOS)
def test_format_round_trip_per_task(demo_ws, fmt, project, experiment):
    if (fmt, project) in CANNOT:
        task = Workspace(demo_ws).project(project).task
        row = next(r for r in get_available_formats(task) if r["name"] == fmt)
        assert row["available"] is False and "Loop" in row["reason"]
        with pytest.raises(FormatUnavailableError, match="cannot carry"):
            export_checkpoint(Workspace(demo_ws), ExportRequest(project, experiment, format=fmt))
        return
    record = export(demo_ws, project, experiment, fmt)
    assert record["validation"]["verdict"] == "passed", record["validation"]
    assert record["validation"]["batch_sizes"] == [1, 2]
    names = [f["name"] for f in record["files"]]
    assert names == (["model.pt"] if fmt == "torchscript" else ["model.xml", "model.bin"])


def test_torchscript_detection_needs_torchvision_ops_and_says_so(demo_ws):
    record = export(demo_ws, "demo-detection", "exp-fasterrcnn-resnet18-fpn", "torchscript")
    assert record["model"]["requires"] == ["torchvision"]
    assert any("import torchvision" in w for w in record["warnings"])
    assert record["validation"]["task_metrics"]["match_rate"] == 1.0


def test_torchscript_script_method_and_metadata(demo_ws):
    import json

    import torch

    record = export(demo_ws, *CLS, "torchscript", method="script")
    assert record["validation"]["verdict"] == "passed" and record["model"]["exporter"] == "torch.jit.script"
    extra = {"metadata.json": ""}
    path = demo_ws / "projects" / CLS[0] / "exports" / record["id"] / "model.pt"
    torch.jit.load(str(path), _extra_files=extra)
    assert json.loads(extra["metadata.json"])["architecture"] == "resnet18"


def test_torchscript_is_validated_where_our_code_cannot_be_imported(tmp_path):
    """The runner's `python -I` in a scratch folder cannot see this project."""
    probe = subprocess.run([sys.executable, "-I", "-c", "import exporter"], cwd=tmp_path, capture_output=True)
    assert probe.returncode != 0 and b"No module named 'exporter'" in probe.stderr


def test_openvino_carries_metadata_and_fp16_halves_the_weights(demo_ws):
    import openvino as ov

    fp32 = export(demo_ws, *CLS, "openvino")
    fp16 = export(demo_ws, *CLS, "openvino", compress_to_fp16=True)
    bins = [next(f["size_bytes"] for f in r["files"] if f["name"] == "model.bin") for r in (fp32, fp16)]
    assert 0.45 < bins[1] / bins[0] < 0.55
    assert fp16["validation"]["verdict"] == "passed" and fp16["validation"]["tolerance"] == 1e-2
    assert fp16["validation"]["task_metrics"]["top1_agreement"] >= 0.99
    xml = demo_ws / "projects" / CLS[0] / "exports" / fp32["id"] / "model.xml"
    model = ov.Core().read_model(str(xml))
    assert model.get_rt_info(["aistudio", "task"]).astype(str) == "classification"


@pytest.mark.parametrize("precision, quantization, ratio", [
    ("fp16", "dynamic", (0.45, 0.55)),
    ("int8", "dynamic", (0.2, 0.3)),
    ("int8", "static", (0.2, 0.3)),
])
def test_onnx_precisions_shrink_and_keep_top1(demo_ws, precision, quantization, ratio):
    fp32 = export(demo_ws, *CLS, "onnx")
    small = export(demo_ws, *CLS, "onnx", precision=precision, quantization=quantization)
    assert ratio[0] < small["output_size_mb"] / fp32["output_size_mb"] < ratio[1]
    validation = small["validation"]
    assert validation["verdict"] == "passed"
    assert validation["task_metrics"]["top1_agreement"] >= 0.99
    assert validation["tolerance"] == {"fp16": 1e-2, "int8": 5e-2}[precision]
    # raw diffs are reported honestly, even when the file passes on agreement
    assert validation["max_diff"] > fp32["validation"]["max_diff"]
    ops = small["model"]["op_types"]
    if precision == "int8":
        assert any("Quant" in op or "Integer" in op for op in ops)


def test_int8_regression_is_judged_by_tolerance_alone(demo_ws):
    record = export(demo_ws, "demo-regression", "exp-resnet18-center", "onnx", precision="int8")
    assert "top1_agreement" not in record["validation"]["task_metrics"]
    assert record["validation"]["verdict"] in ("passed", "failed")
    assert not any("task agreement" in m for m in record["validation"]["messages"])


def test_tensorrt_unavailable_without_the_package_or_a_gpu(tmp_path, monkeypatch):
    from exporter.formats.tensorrt import TensorRtFormat

    available, reason = TensorRtFormat.is_available()
    assert not available and "tensorrt" in reason
    # With the package importable but no CUDA GPU, the reason names the GPU.
    (tmp_path / "tensorrt").mkdir()
    (tmp_path / "tensorrt" / "__init__.py").write_text("__version__ = '10.0'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    available, reason = TensorRtFormat.is_available()
    assert not available and "NVIDIA GPU" in reason
    with pytest.raises(FormatUnavailableError, match="NVIDIA GPU"):
        get_format("tensorrt")
    row = next(f for f in get_available_formats() if f["name"] == "tensorrt")
    assert [o["name"] for o in row["options"]][-2:] == ["precision", "max_batch"]
    assert "TensorRT version and GPU model" in row["note"]  # shown on the format's card


def test_tensorrt_option_checks_without_a_gpu():
    from exporter.errors import InvalidOptionError
    from exporter.formats.tensorrt import TensorRtFormat, profile_shapes

    fmt = TensorRtFormat()
    with pytest.raises(InvalidOptionError, match="max_batch must be at least 2"):
        fmt.check_options({"dynamic_batch": True, "max_batch": 1, "precision": "fp32"})
    fmt.check_options({"dynamic_batch": False, "max_batch": 1, "precision": "fp32"})
    fmt.check_task("object_detection", {"precision": "fp16"})  # built from an FP16 ONNX that keeps NMS in fp32
    assert fmt.default_tolerance({"precision": "fp16"}) > fmt.default_tolerance({"precision": "fp32"})
    assert profile_shapes((1, 3, 64, 64), True, 8) == {"min": [1, 3, 64, 64], "opt": [1, 3, 64, 64],
                                                       "max": [8, 3, 64, 64]}
    assert profile_shapes((4, 3, 64, 64), False, 8)["max"] == [4, 3, 64, 64]
