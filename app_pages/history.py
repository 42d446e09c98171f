"""History: every export, filterable; open one, download, delete, re-run, compare, spot stale ones."""

import streamlit as st

from exporter import report
from exporter.errors import ExportError
from exporter.jobs import delete_export, start_export
from exporter.service import ExportRequest
from exporter.store import all_exports, find_export
from exporter.workspace import Workspace
from ui.components import empty_workspace, result_view

workspace = Workspace()
if not workspace.projects():
    empty_workspace(workspace)
    st.stop()

st.title("Export history")
entries = all_exports(workspace)
filters = st.columns([2, 1, 1, 1, 1, 2])
projects = filters[0].multiselect("Project", sorted({e["project_id"] for e in entries}), key="h_projects")
formats = filters[1].multiselect("Format", sorted({e["format"] for e in entries}), key="h_formats")
statuses = filters[2].multiselect("Status", ["pending", "running", "completed", "failed", "cancelled"],
                                  key="h_statuses")
verdicts = filters[3].multiselect("Validation", ["passed", "failed", "inconclusive"], key="h_verdicts")
evaluations = filters[4].multiselect("Evaluation", ["passed", "failed", "inconclusive", "error", "—"],
                                     key="h_evaluations", help="Accuracy on the project's labelled set (data/val)")
search = filters[5].text_input("Search experiment", key="h_search")
shown = report.filter_exports(entries, projects=projects, formats=formats, statuses=statuses,
                              verdicts=verdicts, evaluations=evaluations, search=search)

records = {e["id"]: e for e in shown}
st.caption(f"{len(shown)} of {len(entries)} exports")
st.dataframe([{
    "id": e["id"], "created": e["created_at"], "project": e["project_id"], "experiment": e["experiment_id"],
    "checkpoint": e["checkpoint"], "format": e["format"], "status": e["status"],
    "validation": (e.get("validation") or {}).get("verdict") or "—",
    "evaluation": report.evaluation_word(e), "metric Δ": report.metric_delta(e),
    "size MB": e.get("output_size_mb"),
    "stale": "⚠️ stale" if report.is_stale(e.get("checkpoint_sha256"), e.get("checkpoint_path")) else "",
} for e in shown[:500]], hide_index=True, width="stretch")

if not records:
    st.info("No exports match these filters.")
    st.stop()

selected = st.selectbox("Open export", list(records), key="h_selected",
                        format_func=lambda i: f"{i} · {records[i]['experiment_id']} · {records[i]['status']}")
_, record = find_export(workspace, selected)
actions = st.columns([1, 1, 2])
if actions[0].button("🔁 Re-run with the same options", key="h_rerun"):
    options = {k: v for k, v in record.options.items() if v is not None}
    try:
        new = start_export(workspace, ExportRequest(record.project_id, record.experiment_id,
                                                    record.checkpoint, record.format, options))
        st.success(f"Started {new.id}; follow it on the Export page or here.")
    except ExportError as exc:
        st.error(exc.message)
with actions[1].popover("🗑️ Delete"):
    st.write(f"Delete **{selected}** and its files? This cannot be undone.")
    if st.button("Yes, delete it", type="primary", key="h_delete"):
        try:
            delete_export(workspace, selected)
            st.session_state.pop("h_selected", None)
            st.rerun()
        except ExportError as exc:
            st.error(exc.message)

result_view(record)

st.divider()
st.subheader("Compare exports")
pair = st.multiselect("Pick two exports", list(records), max_selections=2, key="h_compare")
if len(pair) == 2:
    chosen = [find_export(workspace, i)[1] for i in pair]
    st.dataframe(report.comparison_rows(chosen), hide_index=True, width="stretch")
