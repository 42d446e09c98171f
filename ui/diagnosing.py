"""The result view's Diagnosis tab: where the file diverges from its reference, layer by layer, and the rounds
accuracy=auto took to keep a reduced-precision file within its gate."""

from __future__ import annotations

from typing import Any

import streamlit as st

from exporter.record import AccuracySearch, Diagnosis, ExportRecord
from exporter.workspace import Workspace
from ui.jobs import start_button, waiting_panel


def diagnosis_section(record: ExportRecord) -> None:
    """accuracy=auto's rounds (when it ran), the diagnosis (running, failed or drawn) and the button."""
    if record.accuracy_search is not None:
        search_result(record.accuracy_search)
    diagnosis = record.diagnosis
    if diagnosis is not None and diagnosis.status == "running":
        waiting_panel(record.id, "diagnosis",
                      "⏳ Diagnosing: running the file and its reference on the same images, tensor by tensor…")
        return
    if diagnosis is None:
        st.caption("Not diagnosed. A diagnosis runs the file and its reference on the same images and compares "
                   "every intermediate tensor both have: a reduced-precision ONNX file or an OpenVINO IR against the "
                   "fp32 ONNX graph of the same checkpoint, an fp32 ONNX file against PyTorch module by module. "
                   "It runs by itself when validation or the metric gate fails.")
    elif diagnosis.status == "failed":
        st.error(f"Diagnosis failed: **{diagnosis.error.type}**: {diagnosis.error.message}")
    else:
        diagnosis_result(diagnosis, record.id)
    _diagnose_button(record)


def diagnosis_result(diagnosis: Diagnosis, key: str) -> None:
    """The reading, error along depth (log y, the first layer over the tolerance marked) and the top adders."""
    if not diagnosis.available:
        st.info(diagnosis.reading)
        return
    say = st.warning if diagnosis.first_above else st.success
    say(diagnosis.reading)
    mapping = diagnosis.mapping
    st.caption(f"{diagnosis.comparison} · {len(diagnosis.layers)} layers compared"
               + (f" · {mapping['mapped']} of {mapping['nodes']} nodes mapped to PyTorch modules "
                  f"({mapping['conv_mapped']} of {mapping['conv']} Conv)" if mapping else "")
               + f" · error = ‖file − reference‖ / ‖reference‖ · {diagnosis.duration_s:.1f} s")
    if diagnosis.layers:
        st.plotly_chart(depth_figure(diagnosis), key=f"depth-{key}")
    st.markdown("**The layers that add the most error**")
    st.dataframe([{"layer": row["node"], "op": row["op_type"], "module": row.get("module") or "",
                   "error": row["error"], "added": row["added"]} for row in diagnosis.top],
                 hide_index=True, width="stretch",
                 column_config={"error": st.column_config.NumberColumn(format="%.2e"),
                                "added": st.column_config.NumberColumn(format="%.2e")})


def depth_figure(diagnosis: Diagnosis):
    """Error per compared layer in graph order (log y), the tolerance dashed, the first layer over it ringed."""
    import plotly.graph_objects as go

    layers = diagnosis.layers
    figure = go.Figure()
    figure.add_scatter(x=[row["index"] for row in layers], y=[row["error"] or None for row in layers],  # 0: a gap
                       mode="lines+markers", name="error", marker={"size": 4},
                       customdata=[[row["node"], row["op_type"], row.get("module") or ""] for row in layers],
                       hovertemplate="%{customdata[0]}<br>%{customdata[1]} %{customdata[2]}<br>"
                                     "error %{y:.2e}<extra></extra>")
    figure.add_hline(y=diagnosis.tolerance, line={"dash": "dash", "color": "grey"},
                     annotation_text=f"tolerance {diagnosis.tolerance:g}", annotation_position="top left")
    if first := diagnosis.first_above:
        figure.add_scatter(x=[first["index"]], y=[first["error"]], mode="markers", name="first over tolerance",
                           marker={"size": 14, "color": "rgba(0,0,0,0)", "line": {"width": 2, "color": "#d62728"}},
                           hovertemplate=f"first over tolerance: {first['node']}<extra></extra>")
    figure.update_layout(title="Error along the graph (node order)", height=360,
                         xaxis={"title": "node index (graph order)"},
                         yaxis={"type": "log", "title": "relative error", "exponentformat": "power"},
                         legend={"orientation": "h", "yanchor": "top", "y": -0.2, "x": 0},
                         margin={"t": 50, "b": 40, "l": 10, "r": 10})
    return figure


def search_result(search: AccuracySearch) -> None:
    """accuracy=auto: did it meet the gate, which round the file is, and each round's figures."""
    say = st.success if search.met else st.error
    say(f"accuracy=auto {'met' if search.met else 'did not meet'} the gate ({search.gate}) in "
        f"{search.duration_s:.1f} s; the file is round {search.chosen} of {len(search.rounds) - 1}"
        + ("" if search.met else " — the best one reached, kept and marked failed"))
    st.dataframe([_round_row(row, search.chosen) for row in search.rounds], hide_index=True, width="stretch")
    kept = search.rounds[search.chosen]["kept_float"]
    if kept:
        with st.expander(f"Nodes kept in float ({len(kept)})"):
            st.code("\n".join(kept), language=None)


def _round_row(row: dict[str, Any], chosen: int) -> dict[str, Any]:
    return {"round": row["round"], "nodes in float": row["kept_count"], "validation": row["verdict"],
            "agreement": row.get("agreement"), "metric": row.get("metric"), "drop": row.get("drop"),
            "size MB": row["size_mb"], "gate": "✅" if row["holds"] else "❌",
            "file": "◀" if row["round"] == chosen else ""}


def _diagnose_button(record: ExportRecord) -> None:
    from exporter.jobs import start_diagnosis

    start_button("🔍 Where does it diverge?", f"diagnose-{record.id}",
                 "Compare every intermediate tensor of this file with its reference, layer by layer",
                 lambda: start_diagnosis(Workspace(), record.id))
