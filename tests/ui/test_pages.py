"""Every page driven in-process with streamlit.testing.v1.AppTest against a real workspace."""

from __future__ import annotations

import os
import time

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT, read_index

APP = str(ROOT / "streamlit_app.py")


@pytest.fixture
def app(demo_ws, monkeypatch):
    monkeypatch.setenv("AISTUDIO_WORKSPACE", str(demo_ws))
    st.cache_resource.clear()
    st.cache_data.clear()
    return AppTest.from_file(APP, default_timeout=120)


def wait_for_result(at: AppTest, export_id: str, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        at.run()
        if any(m.value.startswith(f"#### {export_id}") for m in at.markdown):  # finished results only
            return
        time.sleep(0.5)
    raise TimeoutError("no result shown")


def export_once(at: AppTest, project: str) -> str:
    # AppTest reruns only the page after the first run (the frame's sidebar is drawn once), so the
    # project is chosen the way the sidebar stores it; the browser tests drive the sidebar itself.
    at.session_state["project_id"] = project
    at.run()
    at.button(key="export").click().run()
    assert not at.exception and not at.error
    export_id = at.query_params["export"]
    wait_for_result(at, export_id)
    return export_id


def open_result(monkeypatch, root, project: str, export_id: str) -> AppTest:
    """The Export page of workspace ``root`` showing one export's result, as its link opens it."""
    monkeypatch.setenv("AISTUDIO_WORKSPACE", str(root))
    st.cache_data.clear()
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["export"] = export_id
    at.session_state["project_id"] = project
    at.run()
    assert not at.exception
    return at


def test_export_page_flow(app, demo_ws):
    at = app.run()
    assert not at.exception
    assert at.title[0].value == "Export a checkpoint"
    export_id = export_once(at, "demo-regression")
    assert any("validation passed" in m.value for m in at.markdown)
    summary = next(h.proto.body for h in at.get("html") if "aistudio-facts" in h.proto.body and "Opset" in h.proto.body)
    assert all(name in summary for name in ("File", "Size", "Opset", "Nodes", "Max |diff|", "model.onnx"))
    assert len(at.get("plotly_chart")) == 1
    assert any("⬇️ Download model.onnx" in h.proto.body for h in at.get("html"))
    assert any("session.run" in c.value for c in at.code)
    assert read_index(demo_ws, "demo-regression")[0]["id"] == export_id


def test_export_page_offers_a_target_when_jobs_run_on_ray(app, monkeypatch):
    """With ``AISTUDIO_RUNNER=ray`` the options gain the ``target`` field (no cluster is needed to draw it)."""
    monkeypatch.setenv("AISTUDIO_RUNNER", "ray")
    at = app.run()
    assert not at.exception
    assert any(t.label == "Run on Ray nodes offering" for t in at.text_input)
    monkeypatch.setenv("AISTUDIO_RUNNER", "local")
    assert not any(t.label == "Run on Ray nodes offering" for t in app.run().text_input)


def test_every_demo_projects_export_form_draws_each_option(app):
    """Each task's form: every declared option a widget (an integer option without a default — R-CNN proposals —
    an empty field meaning the model's own setting), and no exception."""
    from demo import DEMO_PROJECTS

    at = app.run()
    for project in DEMO_PROJECTS:
        at.session_state["project_id"] = project
        at.run()
        assert not at.exception, (project, at.exception)
        assert at.button(key="export").label
        proposals = [n for n in at.number_input if n.label == "R-CNN proposals per image"]
        two_stage = project in ("demo-detection", "demo-instance-segmentation")
        assert [n.value for n in proposals] == ([None] if two_stage else []), project


def test_evaluation_tab_and_button(demo_eval_ws, monkeypatch):
    """With a labelled set the export evaluates itself; the tab shows the verdict, the metrics of both and
    the confusion matrices; "Evaluate on data/val" runs it again as a background job."""
    from exporter import Workspace
    from exporter.jobs import refresh

    monkeypatch.setenv("AISTUDIO_WORKSPACE", str(demo_eval_ws))
    st.cache_data.clear()
    at = AppTest.from_file(APP, default_timeout=120).run()
    export_id = export_once(at, "demo-classification")
    assert any(s.value.startswith("**passed** — top-1 accuracy") for s in at.success)  # named in words
    assert len(at.get("plotly_chart")) == 2  # the |diff| histogram and the confusion matrices
    first = refresh(Workspace(demo_eval_ws), export_id).evaluation
    at.button(key=f"evaluate-{export_id}").click().run()
    assert not at.exception and not at.error
    deadline = time.monotonic() + 120
    while (evaluation := refresh(Workspace(demo_eval_ws), export_id).evaluation).status == "running":
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert evaluation.status == "completed" and evaluation.pytorch_cached and evaluation.pytorch == first.pytorch
    at.run()
    assert any(s.value.startswith("**passed**") for s in at.success)


def test_diagnosis_tab_shows_the_accuracy_rounds_and_where_it_diverges(demo_eval_ws, monkeypatch):
    """An accuracy=auto INT8 export: its Diagnosis tab has the rounds table, the kept-float nodes and,
    after a diagnosis, the reading, the error-along-depth chart and the top layers."""
    from exporter import ExportRequest, Workspace, export_checkpoint
    from exporter.service import diagnose_export

    # A required gain of 1 mAP@.5 no file can show: every round runs (nodes kept in float), whatever the model.
    record = export_checkpoint(Workspace(demo_eval_ws), ExportRequest(
        "demo-oriented", "exp-obb-resnet18", options={"precision": "int8", "quantization": "static",
                                                      "accuracy": "auto", "max_images": 30, "max_metric_drop": -1}))
    diagnose_export(Workspace(demo_eval_ws), record.id)
    at = open_result(monkeypatch, demo_eval_ws, "demo-oriented", record.id)
    assert any(s.value.startswith("accuracy=auto did not meet the gate (map_50 drops by at most -1") for s in at.error)
    assert any(m.value.startswith(f"#### {record.id}") and "❌ failed: mAP@.5 (rotated IoU)" in m.value
               for m in at.markdown)  # the badge: failed by the metric gate, named
    rounds = next(d.value for d in at.dataframe if "nodes in float" in d.value.columns)
    assert list(rounds["round"]) == [r["round"] for r in record.accuracy_search.rounds]
    assert any(e.label.startswith("Nodes kept in float") for e in at.expander)
    assert any("int8 ONNX against the fp32 ONNX graph" in c.value for c in at.caption)
    charts = [c.proto.spec for c in at.get("plotly_chart")]
    assert any("Error along the graph" in spec for spec in charts)


def test_validation_tab_shows_the_float64_referee(tmp_path, monkeypatch):
    """A file that passes on the float64 referee: its figures in the table, the sentence, and the chart of both
    errors from float64 beside the |diff| curves."""
    from exporter import ExportRequest, Workspace, export_checkpoint
    from testkit.models import classifier_checkpoint

    classifier_checkpoint(tmp_path, "efficientnet_v2_s", num_classes=10, size=64, gain=0.8805)
    record = export_checkpoint(Workspace(tmp_path), ExportRequest("proj", "exp"))
    at = open_result(monkeypatch, tmp_path, "proj", record.id)
    assert any(s.value == f"**float64 referee** — {record.validation.referee}" for s in at.success)
    table = next(d.value for d in at.dataframe if "file vs f64" in d.value.columns)
    assert table["file vs f64"][0] == record.validation.outputs[0].referee.file_error
    charts = [c.proto.spec for c in at.get("plotly_chart")]
    assert any("Float64 referee: max |diff| from the float64 result" in spec for spec in charts)


def test_running_export_can_be_cancelled(app, demo_ws):
    at = app.run()
    at.text_input(key="opt-onnx-anomaly_detection-input_shape").set_value("1,3,1024,1024").run()
    at.button(key="export").click().run()
    export_id = at.query_params["export"]
    at.run()
    assert any(h.value == "Running" for h in at.subheader)
    at.button(key=f"cancel-{export_id}").click().run()
    assert not at.exception
    entry = read_index(demo_ws, "demo-anomaly")[0]
    assert entry["status"] == "cancelled"
    assert sorted(p.name for p in (demo_ws / "projects/demo-anomaly/exports" / export_id).iterdir()) == \
        ["export.json", "worker.log"]


def test_bad_option_shows_a_readable_error(app, demo_ws):
    at = app.run()
    assert at.sidebar.selectbox[0].value == "demo-anomaly"
    at.text_input(key="opt-onnx-anomaly_detection-input_shape").set_value("1,3,-4,5").run()
    at.button(key="export").click().run()
    assert not at.exception
    assert "positive integers" in at.error[0].value
    assert read_index(demo_ws, "demo-anomaly") == []


def test_history_open_filter_compare_rerun_delete(app, demo_ws):
    """A row's click puts its id in the URL (``?export=``), two rows' ids compare them; driven here
    through the URL, and through real clicks in the browser tests."""
    at = app.run()
    first = export_once(at, "demo-anomaly")
    at.switch_page("app_pages/history.py")
    at.query_params.clear()
    at.run()
    assert not at.exception and at.title[0].value == "Export history"
    assert any("Click a row" in i.value for i in at.info)
    at.query_params["export"] = first
    at.run()
    assert any(m.value.startswith(f"#### {first}") for m in at.markdown)
    at.multiselect(key="h_statuses").set_value(["failed"]).run()
    assert any("No exports match" in i.value for i in at.info)
    at.multiselect(key="h_statuses").set_value([]).run()
    at.text_input(key="h_search").set_value("padim").run()
    assert len(at.dataframe[0].value) == 1
    at.text_input(key="h_search").set_value("").run()
    at.button(key="h_rerun").click().run()
    assert any("Started export-" in s.value for s in at.success)
    assert len(read_index(demo_ws, "demo-anomaly")) == 2
    deadline = time.monotonic() + 120
    while any(e["status"] != "completed" for e in read_index(demo_ws, "demo-anomaly")):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    at.query_params["export"] = ",".join(e["id"] for e in read_index(demo_ws, "demo-anomaly"))
    at.run()
    assert not at.exception and [s.value for s in at.subheader] == ["Compare"]
    assert "format" in set(at.dataframe[1].value["metric"])
    at.query_params["export"] = first
    at.run()
    at.button(key="h_delete").click().run()
    assert not at.exception
    remaining = [e["id"] for e in read_index(demo_ws, "demo-anomaly")]
    assert first not in remaining and len(remaining) == 1
    assert not (demo_ws / "projects/demo-anomaly/exports" / first).exists()


def test_history_marks_stale_exports(app, demo_ws):
    at = app.run()
    export_once(at, "demo-regression")
    ckpt = demo_ws / "projects/demo-regression/experiments/exp-resnet18-center/checkpoints/best.ckpt"
    replacement = ckpt.with_suffix(".new")
    replacement.write_bytes(ckpt.read_bytes() + b"\0")  # a new file: never touch the hard-linked original
    os.replace(replacement, ckpt)
    at.switch_page("app_pages/history.py").run()
    assert any("Stale" in w.value for w in at.warning)


def test_projects_page(app):
    at = app.run()
    at.switch_page("app_pages/projects.py").run()
    assert not at.exception and at.title[0].value == "Projects"
    assert [s.value for s in at.subheader] == [
        "Demo · texture anomaly detection", "Demo · shape classification", "Demo · shape detection",
        "Demo · shape instance segmentation", "Demo · oriented plates", "Demo · shape centre regression",
        "Demo · shape segmentation"]
    assert len([b for b in at.button if b.label == "Export →"]) == 8


def test_empty_workspace_builds_the_demo(tmp_path, monkeypatch):
    monkeypatch.setenv("AISTUDIO_WORKSPACE", str(tmp_path))
    monkeypatch.setenv("AISTUDIO_DEMO_PROJECTS", "demo-anomaly")  # the quickest to train; all take minutes
    at = AppTest.from_file(APP, default_timeout=300).run()
    assert at.title[0].value == "Welcome to AI Studio Export"
    at.button(key="build_demo").click().run()
    assert not at.exception
    assert (tmp_path / "projects/demo-anomaly/project.json").exists()
    at.run()
    assert at.title[0].value == "Export a checkpoint"


def test_compare_page_exports_all_and_lists_them(app, demo_ws):
    """Compare with no export yet says what to do; "Export all formats" starts one export per format × precision
    (each with its benchmark queued) and says which were skipped and why."""
    from exporter.jobs import cancel_benchmark, cancel_export
    from exporter.workspace import Workspace

    at = app.run()
    at.session_state["project_id"] = "demo-anomaly"
    at.switch_page("app_pages/compare.py").run()
    assert not at.exception and at.title[0].value == "Compare exports"
    assert any("No completed exports" in i.value for i in at.info)
    at.multiselect(key="export-all-formats").set_value(["onnx", "openvino"]).run()
    assert at.button(key="export-all").label == "Export the chosen formats"
    at.button(key="export-all").click().run()
    assert not at.exception
    started = [e for e in read_index(demo_ws, "demo-anomaly") if e["status"] in ("pending", "running")]
    assert len(started) == 7 and all(e["benchmark"]["status"] == "queued" for e in started)
    assert {e["format"] for e in started} == {"onnx", "openvino"}
    assert any(s.value.startswith("Started 7 exports") for s in at.success)
    assert any("still running" in i.value for i in at.info)
    for entry in started:  # a cancelled export drops the benchmark queued behind it
        cancel_export(Workspace(demo_ws), entry["id"])
        cancel_benchmark(Workspace(demo_ws), entry["id"])  # in case it had finished and begun its benchmark
    assert not [e for e in read_index(demo_ws, "demo-anomaly") if e["status"] == "cancelled" and e["benchmark"]]


@pytest.mark.parametrize(("latencies", "labelled"), [([5.82, 6.30, 8.35], [5, 10]), ([3.1, 3.3], [2, 5]),
                                                     ([1.2, 40.0, 300.0], [1, 2, 5, 10, 20, 50, 100, 200])])
def test_compare_chart_latency_axis_always_shows_its_ticks(latencies, labelled):
    """Latencies that all fall between two 1-2-5 ticks (5.8–8.4 ms) drew a log axis with no tick label: the axis
    now reaches its nearest ticks on both sides (3.1–3.3 ms: 2 and 5), with room for a bubble at either end."""
    import math

    from ui.benchmarking import compare_figure

    rows = [{"id": f"export-{i}", "p50_ms": ms, "change": 0.0, "size_mb": 40.0, "display_format": "ONNX",
             "variant": "fp32", "validation": "passed", "runs_at": ""} for i, ms in enumerate(latencies)]
    axis = compare_figure(rows, [], None, "top-1 accuracy").layout.xaxis
    assert list(axis.tickvals) == labelled
    low, high = axis.range
    assert all(low < math.log10(t) < high for t in [*labelled, *latencies])
    assert low < math.log10(min(latencies)) - 0.05 and high > math.log10(max(latencies)) + 0.05
