"""Option parsing: one table, the same checks for CLI text and JSON values."""

from __future__ import annotations

import pytest

from exporter.errors import InvalidOptionError
from exporter.formats import get_format
from exporter.options import parse_key_values, parse_options

SPECS = get_format("onnx").options()


def test_defaults():
    opts = parse_options(SPECS, {})
    assert opts == {"input_shape": None, "dynamic_batch": True, "tolerance": None, "evaluate": True,
                    "max_images": 500, "max_metric_drop": 0.01, "opset_version": 17,
                    "simplify": True, "exporter": "auto", "external_data": "auto", "precision": "fp32",
                    "quantization": "dynamic", "calibration_samples": 16, "accuracy": "fixed"}


def test_cli_text_and_json_values_parse_alike():
    text = parse_options(SPECS, {"opset_version": "13", "dynamic_batch": "false", "input_shape": "2,3,32,48",
                                 "tolerance": "1e-3"})
    typed = parse_options(SPECS, {"opset_version": 13, "dynamic_batch": False, "input_shape": [2, 3, 32, 48],
                                  "tolerance": 0.001})
    assert text == typed


@pytest.mark.parametrize("raw, match", [
    ({"opset_version": 3}, "out of range"),
    ({"opset_version": 99}, "out of range"),
    ({"opset_version": "seventeen"}, "expected an integer"),
    ({"opset_version": 17.5}, "expected an integer"),
    ({"opset_version": True}, "expected an integer"),
    ({"input_shape": "1,3,-4,5"}, "positive integers"),
    ({"input_shape": "1,3,2.5,5"}, "positive integers"),
    ({"input_shape": [1, 3, 224]}, "positive integers"),
    ({"input_shape": "1,3,100000,100000"}, "too large"),
    ({"dynamic_batch": "maybe"}, "true or false"),
    ({"tolerance": "nan"}, "finite"),
    ({"exporter": "magic"}, "one of auto, legacy, dynamo"),
    ({"max_detections": 5}, "Unknown option 'max_detections'; valid options: "),
])
def test_bad_options_are_rejected_with_a_reason(raw, match):
    with pytest.raises(InvalidOptionError, match=match):
        parse_options(SPECS, raw)


def test_opset_outside_exporter_range_is_rejected_before_export():
    onnx_format = get_format("onnx")
    with pytest.raises(InvalidOptionError, match="legacy 7–20, dynamo 18–23"):
        onnx_format.check_options(parse_options(SPECS, {"opset_version": 21, "exporter": "legacy"}))
    onnx_format.check_options(parse_options(SPECS, {"opset_version": 21}))  # auto → dynamo


def test_key_values():
    assert parse_key_values(["a=1", "b = x=y"]) == {"a": "1", "b": "x=y"}
    with pytest.raises(InvalidOptionError, match="KEY=VALUE"):
        parse_key_values(["novalue"])


def test_every_builtin_option_has_a_human_label_and_says_when_it_applies():
    from exporter.service import option_specs
    from exporter.tasks.registry import BUILTIN_TASKS

    for task in BUILTIN_TASKS:  # (a task a plugin or a test registers may leave its labels out)
        for fmt in ("onnx", "torchscript", "openvino", "tensorrt"):
            for spec in option_specs(get_format(fmt, require_available=False), task):
                assert spec.label and spec.label != spec.name and "_" not in spec.label, (fmt, task, spec.name)
    onnx = {s.name: s for s in option_specs(get_format("onnx"), "classification")}
    assert not onnx["quantization"].applies({"precision": "fp32"})
    assert onnx["quantization"].applies({"precision": "int8"})
    assert not onnx["calibration_samples"].applies({"precision": "int8", "quantization": "dynamic"})
    assert onnx["calibration_samples"].applies({"precision": "int8", "quantization": "static"})
    assert onnx["quantization"].describe()["applies_when"] == {"precision": ["int8"]}


def test_proposals_set_an_rcnn_rpn_and_are_refused_without_one():
    """proposals=N: the R-CNN's RPN keeps N per image at inference (top-N per level never raised above the
    model's own); a detector without an RPN refuses the option before anything runs."""
    import torchvision

    from exporter.models.detection import DetectionOutputs

    rcnn = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None, num_classes=3, rpn_pre_nms_top_n_test=150)
    DetectionOutputs(rcnn, (3, 64, 64), {"proposals": 100})
    assert (rcnn.rpn._pre_nms_top_n["testing"], rcnn.rpn._post_nms_top_n["testing"]) == (100, 100)
    DetectionOutputs(rcnn, (3, 64, 64), {"proposals": 400})
    assert (rcnn.rpn._pre_nms_top_n["testing"], rcnn.rpn._post_nms_top_n["testing"]) == (100, 400)
    assert rcnn.rpn._post_nms_top_n["training"] == 2000  # training untouched
    retina = torchvision.models.detection.retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=3)
    with pytest.raises(InvalidOptionError, match="two-stage"):
        DetectionOutputs(retina, (3, 64, 64), {"proposals": 100})
