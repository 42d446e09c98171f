"""Export: the form on the left (experiment → checkpoint → format → options → Export), the running
export and its result on the right, where the user is looking when they press Export."""

import streamlit as st

from exporter import queries
from exporter.errors import ExportError
from exporter.families import needs as model_needs
from exporter.formats import get_available_formats, get_format
from exporter.jobs import cancel_export, start_export
from exporter.service import ExportRequest, option_specs
from exporter.tasks import metric_label, task_label
from ui.frame import open_project
from ui.results import progress_panel, result_view
from ui.widgets import bring_into_view, facts, format_cards, option_inputs, side_panel, sticky_selectbox

workspace, project = open_project()
st.title("Export a checkpoint")
if notice := st.session_state.pop("notice", None):
    st.success(notice)
st.caption(f"Project **{project.name}** · {task_label(project.task)} — change it in the sidebar.")
form, panel = st.columns([5, 6], gap="large")

with form:
    # 1 · experiment
    experiments = {e.id: e for e in project.experiments()}
    if not experiments:
        st.info("This project has no experiments yet: import a checkpoint on the Projects page.")
        st.stop()
    experiment_id = sticky_selectbox("Experiment", list(experiments), "experiment_id",
                                     format_func=lambda i: f"{experiments[i].name} ({i})")
    experiment = experiments[experiment_id]
    facts({"Task": task_label(experiment.task or project.task),
           "Architecture": experiment.model.get("architecture", "—"),
           **{metric_label(experiment.task, name): f"{value:.4g}" if isinstance(value, float) else value
              for name, value in experiment.metrics.items()}})

    # 2 · checkpoint
    checkpoints = {c.name: c for c in experiment.checkpoints()}
    if not checkpoints:
        st.warning("This experiment has no checkpoint files.")
        st.stop()
    def checkpoint_label(name: str) -> str:  # "best · epoch 7 · top-1 accuracy 0.98"; an import may say neither
        c = checkpoints[name]
        metric = (f"{metric_label(experiment.task, c.metric_name or 'metric')} {c.metric:.4g}"
                  if c.metric is not None else "")
        return " · ".join(part for part in (name, f"epoch {c.epoch}" if c.epoch is not None else "", metric) if part)

    checkpoint = sticky_selectbox("Checkpoint", list(checkpoints), "checkpoint", widget=st.radio, horizontal=True,
                                  format_func=checkpoint_label)

    # 3 · format: the cards are the control
    task = experiment.task or project.task
    st.markdown("**Format**")
    format_name = format_cards(get_available_formats(task, model_needs(task, experiment.model)), key="format")

    # 4 · options (declared by the format and the task in their registries)
    st.markdown("**Options**")
    defaults = {"input_shape": [1, *experiment.model.get("input_size", [3, 224, 224])]}
    raw_options = option_inputs(list(option_specs(get_format(format_name), task)), defaults,
                                key=f"opt-{format_name}-{task}")

    # 5 · export (and, if asked, benchmark the file once it is made)
    cannot_run = get_format(format_name).runs_here()
    then_benchmark = st.checkbox("Then benchmark it on this machine", key="bench-after", disabled=bool(cannot_run),
                                 help=cannot_run or "Time the file in its runtime and PyTorch eager here once it is "
                                      "exported (latency, throughput, memory): its Benchmark tab, and the Compare page")
    then_benchmark = then_benchmark and not cannot_run
    if st.button("Export", icon=":material/rocket_launch:", type="primary", key="export", width="stretch"):
        try:
            record = start_export(workspace, ExportRequest(project.id, experiment_id, checkpoint, format_name,
                                                           raw_options, benchmark={} if then_benchmark else None))
        except ExportError as exc:
            st.error(exc.message)
        else:
            st.query_params["export"] = record.id  # in the URL: a reload or a reconnect keeps showing it
            st.session_state["scroll_to_panel"] = record.id
            st.toast(f"Started {record.id}")

active_ids = [e.id for e in queries.exports(workspace, project.id) if e.active]


@st.fragment(run_every=1.0 if active_ids else 5.0)
def running_exports() -> None:
    """This project's pending/running exports: progress every second while there are any, and a
    look every 5 s otherwise for exports started elsewhere (CLI, API, another tab).

    Only this fragment reruns on the timer; the result beside it is drawn by full runs alone, and
    its download is a plain link the browser fetches by itself. The whole page reruns once when an
    export starts, or when one ends that the result panel should show (the one in the URL, or any
    when none is) — not when another export finishes while the user reads a result.
    """
    active = [e for e in queries.exports(workspace, project.id) if e.active]
    now = {e.id for e in active}
    ended, wanted = set(active_ids) - now, st.query_params.get("export")
    if now - set(active_ids) or (ended and (not wanted or wanted in ended)):
        st.rerun()
    if active:
        st.subheader("Running")
    for entry in active:
        left, right = st.columns([5, 1], vertical_alignment="bottom")
        with left:
            progress_panel(queries.record(workspace, entry.id))
        if right.button("Cancel", key=f"cancel-{entry.id}"):
            cancel_export(workspace, entry.id)
            st.rerun()


with side_panel(panel):
    running_exports()
    finished = [e for e in queries.exports(workspace, project.id) if not e.active]
    wanted = st.query_params.get("export")
    latest = next((e for e in finished if e.id == wanted), finished[0] if finished else None)
    if latest:
        st.subheader("Result")
        result_view(queries.record(workspace, latest.id))
    elif not active_ids:
        st.info("Exports you start appear here with live progress; the History page keeps them all.")
if started := st.session_state.pop("scroll_to_panel", None):  # just pressed Export: show its progress
    bring_into_view(started)
