"""Every registered task and format is covered, and the planned formats say why they are unavailable."""

from __future__ import annotations

import onnx
import pytest

from demo import DEMO_PROJECTS
from exporter.formats import format_names, get_available_formats, get_format
from exporter.formats.onnx import simplify_file
from exporter.tasks import get_task, task_names
from exporter.tasks.registry import BUILTIN_TASKS
from tests.helpers import DEMO, TASK_DEMOS

ROUND_TRIP_TESTED_FORMATS = {"onnx", "torchscript", "openvino", "pt2", "executorch", "litert", "ncnn", "coreml"}


def test_every_task_has_a_demo_project_and_a_round_trip_test():
    built_in = {t for t in task_names() if type(get_task(t)).__module__.startswith("exporter.tasks.")}
    demo_tasks = {spec["task"] for spec in DEMO_PROJECTS.values()}
    round_tripped = {DEMO_PROJECTS[project]["task"] for project, _ in DEMO + TASK_DEMOS}
    assert built_in == demo_tasks == round_tripped == set(BUILTIN_TASKS)  # tests may register their own


def test_every_available_format_has_a_round_trip_test():
    available = {f["name"] for f in get_available_formats() if f["available"]}
    assert available == ROUND_TRIP_TESTED_FORMATS


def test_unavailable_formats_are_listed_but_refused_with_a_reason():
    from exporter.errors import FormatUnavailableError

    assert format_names() == ["onnx", "torchscript", "openvino", "tensorrt", "pt2", "executorch", "litert", "ncnn",
                              "coreml"]
    for row in get_available_formats():
        if not row["available"]:
            assert row["reason"]
            with pytest.raises(FormatUnavailableError, match="unavailable"):
                get_format(row["name"])


def test_onnxsim_failure_keeps_the_graph_and_warns(tmp_path):
    broken = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("NoSuchOp", ["x"], ["y"], domain="nowhere")], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])]))
    onnx.save(broken, tmp_path / "broken.onnx")
    warnings: list[str] = []
    assert simplify_file(tmp_path / "broken.onnx", warnings) == broken
    assert warnings and "kept the unsimplified" in warnings[0]


@pytest.mark.parametrize("name, options, tolerance, agreement", [
    ("onnx", {"precision": "fp32"}, 1e-4, None), ("onnx", {"precision": "fp16"}, 1e-2, 0.99),
    ("onnx", {"precision": "int8"}, 5e-2, 0.99), ("torchscript", {}, 1e-4, None), ("pt2", {}, 1e-4, None),
    ("openvino", {"precision": "fp32", "compress_to_fp16": False}, 1e-4, None),
    ("openvino", {"precision": "fp32", "compress_to_fp16": True}, 1e-2, 0.99),
    ("openvino", {"precision": "int8", "compress_to_fp16": False}, 5e-2, 0.99),
    ("tensorrt", {"precision": "fp32"}, 1e-3, None), ("tensorrt", {"precision": "fp16"}, 1e-2, 0.99),
    ("executorch", {"quantize": "none"}, 1e-4, None), ("executorch", {"quantize": "int8"}, 5e-2, 0.99),
    ("litert", {"precision": "int8"}, 5e-2, 0.99), ("ncnn", {"precision": "fp16"}, 1e-2, 0.99),
    ("coreml", {"precision": "fp16"}, 1e-2, 0.99), ("coreml", {"precision": "fp32"}, 1e-4, None),
])
def test_default_tolerance_and_agreement_follow_the_precision(name, options, tolerance, agreement):
    """A reduced-precision file gets its precision's tolerance and may pass on 99 % task agreement; a
    full-precision one does not (TensorRT's GPU kernels get 1e-3)."""
    fmt = get_format(name, require_available=False)
    assert fmt.default_tolerance(options) == tolerance and fmt.min_agreement(options) == agreement
