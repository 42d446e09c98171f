"""Compare: every export of one experiment side by side — a chart of latency against accuracy change and
a table — to choose the file to deploy; "Export all formats" makes and benchmarks the whole set."""

import streamlit as st

from exporter import queries
from exporter.errors import ExportError
from exporter.formats import get_available_formats
from exporter.jobs import start_export_all
from exporter.tasks import metric_label, task_traits
from exporter.tradeoffs import compare_rows, fastest_within, job_rows, pareto_front, pytorch_baseline
from exporter.verdict import RULE, change_text
from ui.benchmarking import compare_figure
from ui.frame import PAGES, open_project
from ui.widgets import sticky_selectbox

workspace, project = open_project()
st.title("Compare exports")
experiments = {e.id: e for e in project.experiments()}
if not experiments:
    st.info("This project has no experiments yet: import a checkpoint on the Projects page.")
    st.stop()
top = st.columns([3, 3, 2], vertical_alignment="bottom")
with top[0]:
    experiment_id = sticky_selectbox("Experiment", list(experiments), "experiment_id",
                                     format_func=lambda i: f"{experiments[i].name} ({i})")
names = {row["name"]: row["display_name"] for row in get_available_formats(project.task) if row["available"]}
chosen = top[1].multiselect("Formats", list(names), format_func=names.get, key="export-all-formats",
                            placeholder="All formats", help="Leave empty to export to every format the task takes")
if top[2].button("Export the chosen formats" if chosen else "Export all formats", icon=":material/bolt:",
                 key="export-all", width="stretch",
                 help="One export per format × precision this task can take — each validated, evaluated on the "
                      "labelled set when there is one, then benchmarked on this machine (where it can run)"):
    try:
        started = start_export_all(workspace, project.id, experiment_id, benchmark={}, formats=chosen or None)
    except ExportError as exc:
        st.error(exc.message)
    else:
        st.session_state[f"export-all-{experiment_id}"] = [r.id for r in started["started"]]
        st.session_state["notice"] = (f"Started {len(started['started'])} exports"
                                      + "".join(f" · skipped {s['format']} {s['variant']}: {s['reason']}"
                                                for s in started["skipped"]))
if notice := st.session_state.pop("notice", None):
    st.success(notice)
entries = queries.exports(workspace, project.id, experiment_id)
busy_ids = [e.id for e in entries if e.busy]


@st.fragment(run_every=2.0 if busy_ids else None)
def busy() -> None:
    """Export all's live list — each export's format, precision, stage or verdict and benchmark, failures with their
    reason as they happen; the page redraws as each ends."""
    now = [e.id for e in queries.exports(workspace, project.id, experiment_id) if e.busy]
    if set(now) != set(busy_ids):
        st.rerun()
    if not now:
        return
    finished = [i for i in st.session_state.get(f"export-all-{experiment_id}", []) if i not in now]
    jobs = job_rows(queries.records(workspace, [*now, *finished]))
    done = sum(row["done"] for row in jobs)
    st.info(f"⏳ {len(now)} export(s) or benchmark(s) of this experiment still running"
            + (f", {done} done" if done else "") + " — the chart fills in as they finish.")
    st.container(key="export-all-jobs").dataframe(
        [{"export": r["id"], "format": r["format"], "precision": r["variant"], "state": r["state"],
          "benchmark": r["benchmark"], "failure": r["failure"] or ""} for r in jobs],
        hide_index=True, width="stretch", column_config={"failure": st.column_config.TextColumn(width="large")})


busy()
completed = queries.records(workspace, [e.id for e in entries if e.status == "completed"])
if not completed:
    st.info("No completed exports of this experiment yet: export it on the Export page, or press "
            "**Export all formats**.")
    st.stop()
rows = compare_rows(completed)
task = experiments[experiment_id].task or project.task
traits = task_traits(task)
metric = metric_label(task, next((r["metric"] for r in rows if r["metric"]), traits.primary_metric if traits else ""))
front = pareto_front(rows)
baseline = pytorch_baseline(completed)
plotted = [r for r in rows if r["p50_ms"] is not None and r["change"] is not None]
if plotted:
    chart = st.plotly_chart(compare_figure(rows, front, baseline, metric), key="compare-chart", on_select="rerun",
                            selection_mode="points")
    points = chart.selection.points if chart and chart.selection else []
    clicked = next((p["customdata"][0] for p in points if p.get("customdata")), None)
    if clicked:
        st.switch_page(PAGES["export"], query_params={"export": clicked})
    best = fastest_within(rows, 0.01)
    if best:
        st.success(f"Fastest within a 0.01 {metric} drop: **{best['display_format']} {best['variant']}** "
                   f"({best['id']}) — p50 {best['p50_ms']:.2f} ms at batch {best['latency_batch']}, "
                   f"{best['size_mb']:.1f} MB, {metric} {change_text(best['change'])}.")
else:
    st.info("Benchmark exports (Benchmark tab of an export, or Export all formats) and evaluate them on a labelled "
            "set to place them on the chart.")
missing = len(rows) - len(plotted)
if missing and plotted:
    st.caption(f"{missing} export(s) are in the table only: not benchmarked, or not evaluated on a labelled set.")
if any(r["other_machine"] for r in rows):
    st.caption("⚠️ marks figures taken on another machine.")


def cell(value: float | None, form: str) -> str:
    """A figure as text: "—" where there is none."""
    return "—" if value is None else format(value, form)


text = st.column_config.TextColumn
elsewhere = any(r["other_machine"] for r in rows)
st.dataframe([{
    "export": r["id"], "format": r["display_format"],
    "precision": r["variant"] + (f" → runs {r['runs_at']}" if r["runs_at"] else ""),
    "MB": cell(r["size_mb"], ".1f"), "verdict": r["verdicts"], f"Δ {metric}": change_text(r["delta"]),
    "p50 ms": cell(r["p50_ms"], ".2f"), "img/s": cell(r["throughput_ips"], ".0f"), "peak MB": cell(r["peak_mb"], ".0f"),
    "× eager": cell(r["speedup"], ".2f"), "★": "★" if r["id"] in front else "",
    **({"machine": "⚠️ other" if r["other_machine"] else ""} if elsewhere else {}),
} for r in rows], hide_index=True, width="stretch", column_config={  # pixel widths: the whole table fits 1400 px
    "export": text(width=125), "format": text(width=80), "precision": text(width=100), "MB": text(width=50,
    help="size of the file(s)"), "verdict": text(width=80, help=RULE), f"Δ {metric}": text(width=100),
    "p50 ms": text(width=60, help="median latency at the smallest timed batch (usually 1)"),
    "img/s": text(width=55, help="throughput at the largest timed batch (usually 8)"),
    "peak MB": text(width=65, help="resident memory growth while loading and running the file"),
    "× eager": text(width=60, help="PyTorch eager p50 ÷ the file's p50, measured in the same job"),
    "★": text(width=30, help="on the Pareto front: no passed file is both faster and more accurate")})
if baseline:
    throughput = f"{baseline['throughput_ips']:.1f} img/s at the largest batch, " if baseline["throughput_ips"] else ""
    st.caption(f"PyTorch eager on this machine: p50 {baseline['p50_ms']:.2f} ms, {throughput}median of the "
               f"{baseline['runs']} benchmark(s) above (each measures it beside its file).")
