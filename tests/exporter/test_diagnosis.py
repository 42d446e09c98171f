"""Diagnosis layer by layer, accuracy=auto, FP16 detection and OpenVINO INT8: real exports of the demo models."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from exporter import ExportRequest, Workspace, export_checkpoint
from exporter.diagnosis import compare_onnx, layer_errors, module_path, relative_error
from exporter.errors import InvalidOptionError, NotFoundError, UsageError
from exporter.jobs import start_diagnosis
from exporter.pipeline import round_score
from exporter.service import diagnose_export
from exporter.store import find_export

CLS = ("demo-classification", "exp-resnet18-shapes")
DET = ("demo-detection", "exp-fasterrcnn-resnet18-fpn")
OBB = ("demo-oriented", "exp-obb-resnet18")


def export(root, project, experiment, fmt="onnx", **options):
    record = export_checkpoint(Workspace(root), ExportRequest(project, experiment, format=fmt, options=options))
    assert record.status == "completed", record.error
    return record


# ---- pieces, on cases worked by hand ---------------------------------------------------------------

def test_module_paths_follow_the_exporters_scope_names():
    modules = {"model", "model.layer1", "model.layer1.0", "model.layer1.0.conv1", "model.layer1.0.relu",
               "model.layer2.0.downsample.0"}
    assert module_path("/model/layer1/layer1.0/conv1/Conv", modules) == ("model.layer1.0.conv1", 0)
    assert module_path("/model/layer1/layer1.0/relu_1/Relu", modules) == ("model.layer1.0.relu", 1)
    assert module_path("/model/layer2/layer2.0/downsample/downsample.0/Conv", modules) == (
        "model.layer2.0.downsample.0", 0)
    assert module_path("/Gather_5") is None and module_path("Conv_12") is None  # no scope: no module


def test_relative_error_and_the_error_each_layer_adds():
    assert relative_error(np.array([3.0, 4.0]), np.array([3.0, 4.0])) == 0.0
    assert relative_error(np.array([3.3, 4.4]), np.array([3.0, 4.0])) == pytest.approx(0.1)
    # x → A (error 0.1) → B (0.1: adds nothing) → C (0.3: adds 0.2); D is not compared, so E's
    # upstream is D's carried-over 0.3 and E (0.35) adds 0.05; its segment reaches back over D to C, the
    # producer of what D reads (a QDQ pair on C's output would be part of the error).
    nodes = [helper.make_node("Relu", [i], [o], name=n)
             for n, i, o in (("A", "x", "a"), ("B", "a", "b"), ("C", "b", "c"), ("D", "c", "d"), ("E", "d", "e"))]
    layers = layer_errors(nodes, {0: 0.1, 1: 0.1, 2: 0.3, 4: 0.35}, {"x"}, {})
    assert [(la.node, round(la.added, 6)) for la in layers] == [("A", 0.1), ("B", 0.0), ("C", 0.2), ("E", 0.05)]
    assert layers[-1].nodes == ("C", "D", "E") and layers[1].nodes == ("A", "B")


def test_a_scaled_tensor_is_found_where_it_was_scaled():
    """Two graphs that differ in one node's output (×1.5): only that node adds error."""
    def graph(scale: float):
        weight = numpy_helper.from_array(np.full((1,), scale, np.float32), "w")
        nodes = [helper.make_node("Relu", ["x"], ["a"], name="first"),
                 helper.make_node("Mul", ["a", "w"], ["b"], name="scaled"),
                 helper.make_node("Sigmoid", ["b"], ["y"], name="last")]
        io = [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [1, 4]) for n in ("x", "y")]
        return helper.make_model(helper.make_graph(nodes, "g", [io[0]], [io[1]], [weight]),
                                 opset_imports=[helper.make_opsetid("", 17)])

    layers = compare_onnx(graph(1.0), graph(1.5), {"x": np.array([[1, 2, 3, 4]], np.float32)})
    worst = max(layers, key=lambda la: la.added)
    assert worst.node == "scaled" and worst.error == pytest.approx(0.5) and layers[0].error == 0.0


# ---- diagnosis of real exports ----------------------------------------------------------------------

def test_int8_diagnosis_lists_layers_in_graph_order_against_the_fp32_graph(demo_ws):
    record = export(demo_ws, *CLS, precision="int8", quantization="static")
    diagnosis = diagnose_export(Workspace(demo_ws), record.id).diagnosis
    assert diagnosis.available and diagnosis.reference == "onnx fp32" and diagnosis.tolerance == 5e-2
    indices = [row["index"] for row in diagnosis.layers]
    assert len(indices) >= 20 and indices == sorted(indices)
    assert all(0 < row["error"] < 0.5 for row in diagnosis.layers)  # int8 rounding, not a broken graph
    assert len(diagnosis.top) == 10 and diagnosis.top[0]["added"] >= diagnosis.top[-1]["added"]
    assert diagnosis.reading.startswith(("no layer exceeds", "error first exceeds"))


def test_fp32_diagnosis_maps_convs_to_modules_and_pinpoints_a_broken_layer(demo_ws):
    record = export(demo_ws, *CLS)
    diagnosis = diagnose_export(Workspace(demo_ws), record.id).diagnosis
    mapping = diagnosis.mapping
    assert diagnosis.reference == "pytorch" and mapping["conv_mapped"] / mapping["conv"] >= 0.9
    assert diagnosis.first_above is None  # a faithful export: no layer over 1e-4
    conv = next(row for row in diagnosis.layers if row["node"] == "/model/layer2/layer2.0/conv2/Conv")
    assert conv["module"] == "model.layer2.0.conv2" and conv["error"] < 1e-5

    # A test-only graph edit: that Conv's weights and bias × 1.5 scale its output tensor by 1.5.
    store, _ = find_export(Workspace(demo_ws), record.id)
    path = store.export_dir(record.id) / "model.onnx"
    model = onnx.load(str(path))
    node = next(n for n in model.graph.node if n.name == conv["node"])
    for init in model.graph.initializer:
        if init.name in node.input[1:]:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 1.5, init.name))
    onnx.save_model(model, str(path))
    broken = diagnose_export(Workspace(demo_ws), record.id).diagnosis
    assert broken.first_above["node"] == conv["node"] and broken.top[0]["node"] == conv["node"]
    assert broken.first_above["error"] == pytest.approx(0.5, rel=1e-3)
    assert broken.reading.startswith(f"error first exceeds 1e-04 at `{conv['node']}`")


def test_diagnosis_refusals_and_formats_without_intermediates(demo_ws):
    ws = Workspace(demo_ws)
    record = export(demo_ws, *CLS, fmt="torchscript")
    diagnosis = diagnose_export(ws, record.id).diagnosis
    assert diagnosis.available is False and "not available for TorchScript" in diagnosis.reading
    store, _ = find_export(ws, record.id)
    store.update(record.id, status="running")
    with pytest.raises(UsageError, match="only completed exports can be diagnosed"):
        start_diagnosis(ws, record.id)
    store.update(record.id, status="completed")
    (store.export_dir(record.id) / "model.pt").unlink()
    with pytest.raises(NotFoundError, match="files of export .* are gone"):
        start_diagnosis(ws, record.id)
    assert store.get(record.id).diagnosis.available is False  # the earlier diagnosis is left as it was


# ---- reduced precision that keeps its accuracy ----------------------------------------------------

def assert_search_consistent(record, gate: float = 0.01):
    """accuracy=auto's mechanism, whichever side of the gate this machine's trained model lands on: rounds in
    order, each keeping float nodes after round 0; met iff a round holds; the first holding round (else the best
    one) is the file; the evaluation is that round's and the one verdict follows the metric gate."""
    search = record.accuracy_search
    rounds = search.rounds
    assert [r["round"] for r in rounds] == list(range(len(rounds))) and 1 <= len(rounds) <= search.max_rounds + 1
    assert rounds[0]["kept_count"] == 0 and all(r["kept_count"] > 0 for r in rounds[1:])
    # the metric gate decides each round; a round whose evaluation broke (a file answering NaN) does not hold
    assert all(r["holds"] == (r["drop"] is not None and r["drop"] <= gate + 1e-12) for r in rounds)
    assert search.met == any(r["holds"] for r in rounds)
    first = next((r for r in rounds if r["holds"]), None)
    chosen = first or max(rounds, key=round_score)
    assert search.chosen == chosen["round"]
    assert not first or rounds[-1] is first  # the search stops at the first round that holds
    assert record.decide().gate == "evaluation" and record.verdict == ("passed" if search.met else "failed")
    if chosen["drop"] is None:  # every round's file broke the evaluation (NaN on the labelled set)
        assert record.evaluation.error.type == "NonFiniteOutputError"
    else:
        assert record.evaluation.drop == pytest.approx(chosen["drop"], abs=1e-9)
        assert record.evaluation.verdict == record.verdict
    assert record.output_size_mb < search.float_size_mb  # int8 weights, however much stays in float


def test_accuracy_auto_int8_oriented_detector_meets_the_metric_gate(demo_eval_ws):
    record = export(demo_eval_ws, *OBB, precision="int8", quantization="static", accuracy="auto")
    assert_search_consistent(record)


def test_accuracy_auto_met_at_once_by_a_gate_every_file_meets(demo_eval_ws):
    """A gate no file can miss (mAP@.5 lies in [0, 1]): round 0 holds, nothing is kept in float, it passes."""
    record = export(demo_eval_ws, *OBB, precision="int8", quantization="static", accuracy="auto",
                    max_metric_drop=1.0)
    search = record.accuracy_search
    assert search.met and search.chosen == 0 and len(search.rounds) == 1 and search.rounds[0]["kept_count"] == 0
    assert record.verdict == "passed" and record.decide().gate == "evaluation"
    assert_search_consistent(record, gate=1.0)


@pytest.mark.slow
def test_accuracy_auto_int8_detector_and_fp16_detector(demo_eval_ws):
    int8 = export(demo_eval_ws, *DET, precision="int8", quantization="static", accuracy="auto")
    assert_search_consistent(int8)
    assert "match_rate" in int8.validation.task_metrics  # recorded as evidence beside the metric gate
    assert "detections matched on the samples" in int8.decide().evidence
    fp16 = export(demo_eval_ws, *DET, precision="fp16", evaluate=False)  # its mAP: make bench (precision.md)
    rate = fp16.validation.task_metrics["match_rate"]  # no labelled set: task agreement ≥ 99 % decides
    assert fp16.validation.verdict == ("passed" if rate >= 0.99 else "failed"), fp16.validation.messages
    assert fp16.verdict == fp16.validation.verdict and fp16.decide().gate == "validation"
    assert fp16.output_size_mb < 0.6 * int8.accuracy_search.float_size_mb


@pytest.mark.parametrize("experiment", ["exp-padim-resnet18", "exp-autoencoder"])
def test_fp16_anomaly_models_whose_score_reads_a_graph_output(demo_ws, experiment):
    """The converter casts a graph output back to float32 but not the node reading it (the score from the
    anomaly map): one model needs that node kept in float, the other breaks if it is."""
    record = export(demo_ws, "demo-anomaly", experiment, precision="fp16")
    assert record.validation.verdict == "passed" and record.model.op_types.get("Cast")


def test_accuracy_auto_refused_without_images_or_at_fp32(demo_ws):
    ws = Workspace(demo_ws)
    with pytest.raises(InvalidOptionError, match="precision=fp16 or int8"):
        export_checkpoint(ws, ExportRequest(*CLS, options={"accuracy": "auto"}))
    samples = ws.project(CLS[0]).path / "data" / "samples"
    for image in samples.iterdir():
        image.unlink()
    with pytest.raises(InvalidOptionError, match="add sample images to .*data/samples or attach a labelled set"):
        export_checkpoint(ws, ExportRequest(*CLS, options={"precision": "int8", "accuracy": "auto"}))
    assert not (ws.project(CLS[0]).path / "exports").exists() or not any(
        p.name.startswith("export-") for p in (ws.project(CLS[0]).path / "exports").iterdir())


def test_accuracy_auto_that_cannot_meet_its_gate_keeps_the_best_round_marked_failed(demo_eval_ws):
    # A required gain of 1 mAP@.5 (a negative allowed drop): no file can show it, however the model trained.
    record = export(demo_eval_ws, *OBB, precision="int8", quantization="static", accuracy="auto",
                    max_metric_drop=-1.0)
    search = record.accuracy_search
    assert not search.met and len(search.rounds) == 4  # every round tried
    best = max(search.rounds, key=round_score)
    assert search.chosen == best["round"] and record.evaluation.drop == pytest.approx(best["drop"])
    assert record.gate_failed and record.evaluation.verdict == "failed"  # kept, and marked failed
    assert record.verdict == "failed" and record.decide().gate == "evaluation"
    assert_search_consistent(record, gate=-1.0)
    assert (Workspace(demo_eval_ws).project(OBB[0]).path / "exports" / record.id / "model.onnx").is_file()
    assert record.diagnosis.available  # the gate failed: diagnosed by itself


def test_openvino_int8_with_nncf_validates_and_is_diagnosed(demo_ws):
    record = export(demo_ws, *CLS, fmt="openvino", precision="int8")
    agreement = record.validation.task_metrics["top1_agreement"]  # no labelled set: agreement ≥ 99 % decides
    assert record.validation.verdict == ("passed" if agreement >= 0.99 else "failed")
    fp32_bin = 44.7  # MB, the demo resnet18 at fp32
    assert record.output_size_mb < fp32_bin / 3
    diagnosis = diagnose_export(Workspace(demo_ws), record.id).diagnosis
    assert diagnosis.reference == "onnx fp32" and diagnosis.comparison.startswith("OpenVINO IR (int8, NNCF)")
    assert len(diagnosis.layers) >= 40 and all(row["error"] < 0.5 for row in diagnosis.layers)


def test_openvino_accuracy_rounds_keep_the_record_whole_and_the_file_benchmarks(demo_eval_ws):
    """Every accuracy=auto round of an OpenVINO int8 file (a gain no file can show: all rounds run) describes the
    model as the first did — the record's inputs are what benchmarks, snippets and deploy bundles feed."""
    from exporter.service import benchmark_export

    first = export(demo_eval_ws, "demo-anomaly", "exp-autoencoder", fmt="openvino", precision="int8")
    record = export(demo_eval_ws, "demo-anomaly", "exp-autoencoder", fmt="openvino", precision="int8",
                    accuracy="auto", max_metric_drop=-1.0)
    assert record.accuracy_search.chosen > 0 or len(record.accuracy_search.rounds) > 1
    assert record.model.inputs == first.model.inputs and record.model.outputs == first.model.outputs
    assert [i.name for i in record.model.inputs] == ["input"]
    bench = benchmark_export(Workspace(demo_eval_ws), record.id, {"batch_sizes": [1], "seconds": 0.2}).benchmarks[-1]
    assert bench.status == "completed", bench.error
