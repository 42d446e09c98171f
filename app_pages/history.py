"""History: every export, filterable; click a row to open it (download, delete, re-run), two rows to
compare them; stale ones are flagged."""

import streamlit as st

from exporter import passport, queries, report
from exporter.errors import ExportError
from exporter.jobs import delete_export, start_export
from exporter.service import ExportRequest
from exporter.verdict import RULE
from exporter.workspace import Workspace
from ui.passports import verify_box
from ui.results import result_view
from ui.widgets import empty_workspace

workspace = Workspace()
if not workspace.projects():
    empty_workspace(workspace)
    st.stop()

st.title("Export history")
verify_box()
entries = queries.exports(workspace)
filters = st.columns([2, 1, 1, 1, 1, 2])
projects = filters[0].multiselect("Project", sorted({e.project_id for e in entries}), key="h_projects",
                                  placeholder="any")
formats = filters[1].multiselect("Format", sorted({e.format for e in entries}), key="h_formats", placeholder="any")
statuses = filters[2].multiselect("Status", ["pending", "running", "completed", "failed", "cancelled"],
                                  key="h_statuses", placeholder="any")
verdicts = filters[3].multiselect("Verdict", ["passed", "failed", "inconclusive", "unverified"], key="h_verdicts",
                                  placeholder="any", help=RULE)
evaluations = filters[4].multiselect("Evaluation", ["passed", "failed", "inconclusive", "error", "—"],
                                     key="h_evaluations", placeholder="any",
                                     help="Accuracy on the project's labelled set (data/val)")
search = filters[5].text_input("Search experiment", key="h_search")
shown = report.filter_exports(entries, projects=projects, formats=formats, statuses=statuses,
                              verdicts=verdicts, evaluations=evaluations, search=search)[:500]
if not shown:
    st.info("No exports match these filters.")
    st.stop()

st.caption(f"{len(shown)} of {len(entries)} exports · click a row to open it, a second row to compare the two")
table = st.dataframe([{
    "id": e.id, "created": e.created_at, "project": e.project_id, "experiment": e.experiment_id,
    "checkpoint": e.checkpoint, "format": e.format, "status": e.status,
    "verdict": report.verdict_word(e), "validation": e.validation.verdict or "—",
    "evaluation": report.evaluation_word(e), "metric Δ": report.metric_delta(e) or "—",
    "size MB": e.output_size_mb, "p50 ms": report.benchmark_p50(e),
    "signed": f"🔏 {key}" if (key := passport.signed_by(queries.export_folder(workspace, e))) else "",
    "stale": "⚠️ stale" if report.is_stale(e.checkpoint_sha256, e.checkpoint_path) else "",
} for e in shown], hide_index=True, width="stretch", on_select="rerun", selection_mode="multi-row", key="h_table")
ids = [e.id for e in shown]
picked = [ids[row] for row in table.selection.rows if row < len(ids)]
if picked:
    st.query_params["export"] = ",".join(picked[-2:])  # the URL opens the same export(s) again
    st.session_state["h_had_selection"] = True
elif st.session_state.pop("h_had_selection", False):  # every row unticked: open none
    st.query_params.pop("export", None)
picked = [i for i in st.query_params.get("export", "").split(",") if i in ids][-2:]

if len(picked) == 2:
    st.subheader("Compare")
    chosen = queries.records(workspace, picked)
    st.dataframe(report.comparison_rows(chosen), hide_index=True, width="stretch")
    st.caption("Untick a row to open the other one.")
elif picked:
    opened = queries.record(workspace, picked[0])
    actions = st.columns([1, 1, 3])
    if actions[0].button("Re-run with the same options", icon=":material/replay:", key="h_rerun"):
        options = {k: v for k, v in opened.options.items() if v is not None}
        try:
            new = start_export(workspace, ExportRequest(opened.project_id, opened.experiment_id,
                                                        opened.checkpoint, opened.format, options))
            st.success(f"Started {new.id}; follow it on the Export page or here.")
        except ExportError as exc:
            st.error(exc.message)
    with actions[1].popover("Delete", icon=":material/delete:"):
        st.write(f"Delete **{opened.id}** and its files? This cannot be undone.")
        if st.button("Yes, delete it", type="primary", key="h_delete"):
            try:
                delete_export(workspace, opened.id)
                st.query_params.pop("export", None)
                st.rerun()
            except ExportError as exc:
                st.error(exc.message)
    result_view(opened)
else:
    st.info("Click a row to open its export; pick two rows to compare them side by side.")
