"""The result view of one export: its verdict, the Validation, Evaluation, Benchmark, Diagnosis, Model, Run it and
Record tabs."""

from __future__ import annotations

import html
from typing import Any

import streamlit as st

from exporter import queries, report
from exporter.record import ExportRecord, OutputCheck
from exporter.tasks import metric_label, task_label
from exporter.verdict import RULE, change_text
from exporter.workspace import Workspace
from ui.benchmarking import benchmark_section
from ui.deploying import deploy_section
from ui.diagnosing import diagnosis_section
from ui.jobs import start_button, waiting_panel
from ui.passports import signed_line
from ui.transfers import download_section
from ui.widgets import facts

BADGES = {"passed": ("green", "✅", "validation passed"), "failed": ("red", "❌", "failed"),
          "inconclusive": ("orange", "⚠️", "inconclusive"), "running": ("blue", "⏳", "running"),
          "pending": ("gray", "🕒", "queued"), "cancelled": ("gray", "⏹️", "cancelled"),
          "unvalidated": ("gray", "•", "not validated"), "unverified": ("orange", "❔", "unverified: not run here")}


def badge(record: ExportRecord) -> str:
    """Markdown badge for a record's one verdict, naming the gate that decided it."""
    outcome = record.decide()
    word = outcome.verdict
    color, icon, word_label = BADGES.get(word, ("gray", "•", word))
    if record.status == "completed" and word in ("passed", "failed") and outcome.gate:
        word_label = {"validation": f"validation {word}",
                      "validation and evaluation": "validation passed · evaluation passed",
                      "evaluation": f"{word}: {outcome.reason.split(', allowed')[0]}"}.get(outcome.gate, word)
    return f":{color}-badge[{icon} {word_label.replace('[', '(').replace(']', ')')}]"


def verdict_line(record: ExportRecord) -> None:
    """Which gate decided the verdict, why, and what the other gate showed (under the badge)."""
    outcome = record.decide()
    if record.status != "completed" or not outcome.gate:
        return
    evidence = f" · {'evidence' if outcome.gate == 'evaluation' else 'also'}: {outcome.evidence}" if (
        outcome.evidence) else ""
    st.caption(f"**{outcome.verdict}** — decided by the {outcome.gate} gate: {outcome.reason}{evidence}"
               + (f" · see the **{outcome.tab}** tab" if outcome.tab else ""), help=RULE)


def progress_panel(record: ExportRecord) -> None:
    """Stage and progress bar of a pending/running export."""
    from datetime import UTC, datetime

    label = "Queued" if record.status == "pending" else f"stage **{record.stage}**"
    try:
        since = datetime.fromisoformat((record.started_at or record.created_at).replace("Z", "+00:00"))
        elapsed = f" · {(datetime.now(UTC) - since).total_seconds():.0f} s"
    except ValueError:
        elapsed = ""
    st.progress(record.progress.fraction,
                text=f"{record.id} · {record.format.upper()} · {label} · {record.progress.fraction:.0%}{elapsed}"
                     f" · on {report.where_it_runs(record.worker)}")


def result_view(record: ExportRecord) -> None:
    """Everything about one export: state, file, model, validation, how to run it, download."""
    st.markdown(f"#### {record.id} &nbsp; {badge(record)}")
    verdict_line(record)
    st.caption(f"{record.project_id} / {record.experiment_id} · checkpoint `{record.checkpoint}` · "
               f"{record.format.upper()} · created {record.created_at} · on {report.where_it_runs(record.worker)}")
    if report.is_stale(record.checkpoint_sha256, record.checkpoint_path):
        st.warning("Stale: the checkpoint file has changed since this export (sha256 differs). Re-run it.")
    if record.active:
        progress_panel(record)
        return
    if record.error:
        st.error(f"**{record.error.type}** at stage `{record.error.stage}`: {record.error.message}")
    if record.status != "completed":
        return
    _summary_metrics(record)
    tabs = st.tabs(["Validation", "Evaluation", "Benchmark", "Diagnosis", "Model", "Run it", "Deploy", "Record"],
                   default=record.decide().tab or "Validation")
    with tabs[0]:
        validation_section(record)
        yardstick_section(record)
    with tabs[1]:
        evaluation_section(record)
    with tabs[2]:
        benchmark_section(record)
    with tabs[3]:
        diagnosis_section(record)
    with tabs[4]:
        model_section(record)
    with tabs[5]:
        st.code(report.usage_snippet(record), language="python")
    with tabs[6]:
        deploy_section(record)
    with tabs[7]:
        st.json(record.to_json(), expanded=False)
    download_section(record)
    signed_line(record)


def _summary_metrics(record: ExportRecord) -> None:
    model, validation, bench = record.model, record.validation, record.benchmark
    head = bench.headline() if bench else {}
    facts({"File": record.output_file or "—", "Size": f"{record.output_size_mb or 0:.1f} MB",
           "Opset": model.opset or "—", "Nodes": model.node_count or "—",
           "Max |diff|": f"{validation.max_diff:.2e}" if validation and validation.max_diff is not None else "—",
           f"p50 · batch {head.get('batch')}": f"{head['p50_ms']:.2f} ms" if head.get("p50_ms") else None})
    for warning in record.warnings:
        st.info(warning)
    sha = record.files[0].sha256 if record.files else ""
    st.caption(f"sha256 `{sha}` · total {sum(record.timings_s.values()):.1f}s "
               f"({', '.join(f'{k} {v:.2f}s' for k, v in record.timings_s.items())})")


def validation_section(record: ExportRecord) -> None:
    """Per-output table, |diff| histograms, batch sizes and task metrics."""
    validation = record.validation
    if validation is None:
        st.caption("This export was not validated.")
        return
    if validation.verdict == "unverified":
        st.warning("**Unverified** — the file was not run, so nothing says it computes what PyTorch computes.")
        for message in validation.messages:
            st.write(f"- {message}")
        return
    st.write(f"Checked at batch sizes **{validation.batch_sizes}** on **{validation.inputs}** inputs; "
             f"an output passes when max |diff| ≤ tolerance × max(1, max |output|) "
             f"(tolerance {validation.tolerance}).")
    rows = [{"output": o.name, "shape": str(o.shape), "max abs": o.max_abs_diff, "mean abs": o.mean_abs_diff,
             "max rel": o.max_rel_diff, "allowed": o.allowed_abs_diff,
             "pass": "✅" if o.passed and not o.problem else ("⚠️" if o.degenerate else "❌"),
             **({"PyTorch f32 vs f64": o.referee.torch_float32_error, "file vs f64": o.referee.file_error}
                if o.referee else {}),
             "note": o.problem or o.note or ""} for o in validation.outputs]
    st.dataframe(rows, hide_index=True, width="stretch")
    facts({metric.replace("_", " "): f"{value:.2%}" if metric.endswith(("agreement", "rate")) else f"{value:g}"
           for metric, value in validation.task_metrics.items()})
    say = st.warning if validation.verdict == "inconclusive" else st.error
    for message in validation.messages:
        say(message)
    if validation.referee:
        (st.success if validation.passed else st.error)(f"**float64 referee** — {validation.referee}")
    if validation.outputs:
        st.plotly_chart(diff_ecdf_figure(validation.outputs), key=f"ecdf-{record.id}")
    if refereed := [o for o in validation.outputs if o.referee]:
        st.plotly_chart(referee_figure(refereed), key=f"referee-{record.id}")


def yardstick_section(record: ExportRecord) -> None:
    """The model's library's own export of the same model beside this file (anomalib's ``Engine.export``)."""
    yardstick = record.yardstick
    if yardstick is None:
        return
    library = yardstick.exporter.split()[0]
    st.markdown(f"##### Beside {library}'s own export")
    if yardstick.status == "failed":
        st.warning(f"{yardstick.exporter}: {yardstick.error.message if yardstick.error else 'failed'}")
        return
    st.caption(f"{yardstick.exporter} — both files run the same {yardstick.images} validation images, one at a "
               f"time; max |diff| from {library}'s torch model, latency the mean of 10 calls at batch 1.")
    st.dataframe([{"exporter": r["exporter"], "size": f"{r['size_mb']:.2f} MB",
                   **({"cannot run them": r["error"]} if r.get("error") else
                      {"max |diff| score": f"{r['max_diff_score']:.1e}", "max |diff| map": f"{r['max_diff_map']:.1e}",
                       "ms · batch 1": f"{r['ms_batch1']:.1f}"})}
                  for r in yardstick.rows], hide_index=True, width="stretch")


def referee_figure(outputs: list[OutputCheck]):
    """Per output, how far PyTorch float32 and the file each are from the float64 result (dots on a log axis),
    and the most the file may be (the referee's multiple of PyTorch's own, or the tolerance)."""
    import math

    import plotly.graph_objects as go

    names = [o.name for o in outputs]
    figure = go.Figure()
    figure.add_scatter(y=names, x=[o.referee.torch_float32_error for o in outputs], mode="markers",
                       name="PyTorch float32", marker={"symbol": "circle", "size": 14, "color": "#636EFA"})
    figure.add_scatter(y=names, x=[o.referee.file_error for o in outputs], mode="markers", name="the file",
                       marker={"symbol": "diamond", "size": 15,
                               "color": ["#00CC96" if o.referee.passed else "#EF553B" for o in outputs]})
    figure.add_scatter(y=names, x=[o.referee.allowed for o in outputs], mode="markers", name="most allowed",
                       marker={"symbol": "line-ns-open", "size": 26, "line": {"width": 2}, "color": "black"})
    values = [v for o in outputs for v in (o.referee.torch_float32_error, o.referee.file_error, o.referee.allowed)
              if v > 0]
    low, high = (math.log10(min(values)) - 0.5, math.log10(max(values)) + 0.5) if values else (-12, 1)
    figure.update_layout(
        title={"text": "Float64 referee: max |diff| from the float64 result<br><sup>the file passes when its "
                       "diamond is left of the black mark</sup>"},
        xaxis={"type": "log", "exponentformat": "power", "range": [low, high]},
        yaxis={"automargin": True}, legend={"orientation": "h", "yanchor": "top", "y": -0.3, "x": 0},
        height=230 + 40 * len(outputs), margin={"t": 70, "b": 50, "l": 10, "r": 10})
    return figure


def evaluation_section(record: ExportRecord) -> None:
    """Accuracy on the project's labelled set: PyTorch vs the file, the gate, per class, disagreements."""
    evaluation = record.evaluation
    if evaluation is not None and evaluation.status == "running":
        waiting_panel(record.id, "evaluation",
                      "⏳ Evaluating on the project's labelled set (PyTorch and the file, then their metrics)…")
        return
    if evaluation is None:
        st.caption("Not evaluated. Exports evaluate by themselves when the project has a labelled set in "
                   "`data/val/` (one standard layout per task, see docs/evaluation.md).")
    elif evaluation.status == "failed":
        st.error(f"Evaluation failed: **{evaluation.error.type}**: {evaluation.error.message}")
    else:
        _evaluation_result(evaluation, record.model.task)
        _gallery(record)
    _evaluate_button(record)


def _figure(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def _evaluation_result(evaluation: Any, task: str | None) -> None:
    name = evaluation.primary_metric
    say = {"passed": st.success, "failed": st.error}.get(evaluation.verdict, st.warning)
    say(f"**{evaluation.verdict}** — {evaluation.reason}")
    st.caption(f"{evaluation.dataset.get('images')} labelled images ({evaluation.dataset.get('layout')}, "
               f"{evaluation.dataset.get('digest')}) · {evaluation.duration_s:.1f}s"
               + (" · PyTorch predictions from the cache" if getattr(evaluation, "pytorch_cached", False) else ""))
    st.dataframe([{"metric": metric_label(task, k), "PyTorch": f"{v:.4f}", "file": _figure(evaluation.file.get(k)),
                   "Δ (file − PyTorch)": change_text(evaluation.delta.get(k)), "primary": "★" if k == name else ""}
                  for k, v in evaluation.pytorch.items()], hide_index=True, width="stretch")
    per_class = getattr(evaluation, "per_class", None) or {}
    if per_class.get("pytorch"):
        st.markdown("**Per class**")
        st.dataframe([{"class": c, "PyTorch": v, "file": per_class["file"].get(c)}
                      for c, v in per_class["pytorch"].items()], hide_index=True, width="stretch")
    extra = getattr(evaluation, "extra", None) or {}
    if (extra.get("pytorch") or {}).get("confusion"):
        st.plotly_chart(confusion_figure(extra["pytorch"], extra["file"]), key=f"confusion-{id(evaluation)}")


def _gallery(record: ExportRecord) -> None:
    """The images where the file and PyTorch disagree most, both answers drawn, worst first."""
    shown = [d for d in record.evaluation.disagreements if d.get("thumbnail")]
    if not record.evaluation.disagreements:
        st.caption("PyTorch and the file give the same answer on every labelled image.")
        return
    st.markdown(f"**Where they disagree most** ({len(record.evaluation.disagreements)} images, worst first; "
                "left PyTorch, right the file)")
    folder = queries.export_folder(Workspace(), record)
    for row in range(0, len(shown), 3):
        for column, entry in zip(st.columns(3), shown[row:row + 3], strict=False):
            path = folder / entry["thumbnail"]
            if path.is_file():
                column.image(str(path), caption=f"{entry['image']} · disagreement {entry['score']:.3g}",
                             width="stretch")
    if not shown:
        st.dataframe(record.evaluation.disagreements, hide_index=True, width="stretch")


def confusion_figure(reference: dict[str, Any], exported: dict[str, Any]):
    """Confusion matrices of PyTorch and of the file, side by side (rows: truth, columns: predicted)."""
    from plotly.subplots import make_subplots

    figure = make_subplots(rows=1, cols=2, subplot_titles=("PyTorch", "exported file"), horizontal_spacing=0.12)
    for column, data in ((1, reference), (2, exported)):
        figure.add_heatmap(z=data["confusion"], x=data["classes"], y=data["classes"], colorscale="Blues",
                           showscale=column == 2, texttemplate="%{z}", row=1, col=column,
                           hovertemplate="truth %{y}<br>predicted %{x}<br>%{z} images<extra></extra>")
    figure.update_yaxes(autorange="reversed")
    figure.update_yaxes(title_text="truth", col=1)
    figure.update_xaxes(title_text="predicted")
    figure.update_layout(title="Confusion matrices — a good export looks the same on both sides", height=360,
                         margin={"t": 70, "b": 40})
    return figure


def _evaluate_button(record: ExportRecord) -> None:
    from exporter.jobs import start_evaluation

    start_button("📏 Evaluate on data/val", f"evaluate-{record.id}",
                 "Run PyTorch and this file on the project's labelled set and compare their metrics",
                 lambda: start_evaluation(Workspace(), record.id))


def diff_ecdf_figure(outputs: list[OutputCheck]):
    """Per output, the share of its elements whose |PyTorch − file| is at most x (log x): one curve
    each, so a 2-element output reads as well as a 16k-element one, with its allowed |diff| as a
    dashed line of the same colour (named in the legend, not written over the plot)."""
    import math

    import plotly.graph_objects as go
    from plotly.colors import qualitative

    figure = go.Figure()
    right = max([o.allowed_abs_diff or 0 for o in outputs] + [o.histogram.get("edges", [1e-6])[-1] for o in outputs])
    for n, out in enumerate(outputs):
        edges, counts = out.histogram.get("edges", []), out.histogram.get("counts", [])
        zeros = sum(out.histogram.get("exact_zero", [0]))
        total = zeros + sum(counts)
        if not edges or not total:
            continue
        colour = qualitative.Plotly[n % len(qualitative.Plotly)]
        cumulative, below = [], zeros
        for count in counts:
            below += count
            cumulative.append(below)
        figure.add_scatter(x=edges, y=[c / total for c in [zeros, *cumulative]], name=out.name, mode="lines",
                           line={"shape": "hv", "color": colour}, customdata=[[c, total] for c in [zeros, *cumulative]],
                           hovertemplate=f"<b>{html.escape(out.name)}</b><br>|diff| ≤ %{{x:.1e}}: %{{y:.1%}} "
                                         "(%{customdata[0]:,} of %{customdata[1]:,} elements)<extra></extra>")
        figure.add_scatter(x=[out.allowed_abs_diff] * 2, y=[0, 1], mode="lines", name=f"allowed · {out.name}",
                           line={"dash": "dash", "color": colour, "width": 1},
                           hovertemplate=f"allowed for {html.escape(out.name)}: %{{x:.1e}}<extra></extra>")
    figure.update_layout(
        title={"text": "Share of elements within |PyTorch − file| ≤ x<br><sup>good: every curve reaches 100 % "
                       "left of its dashed allowed line</sup>"},
        xaxis={"type": "log", "title": "absolute difference", "exponentformat": "power",
               "range": [-12.2, math.log10(max(right, 1e-12)) + 0.5]},  # room right of every allowed line
        yaxis={"title": "share of elements", "tickformat": ".0%", "range": [0, 1.05]},
        legend={"orientation": "h", "yanchor": "top", "y": -0.25, "x": 0}, height=420,
        margin={"t": 70, "b": 40, "l": 10, "r": 10})
    return figure


def model_section(record: ExportRecord) -> None:
    """Inputs, outputs, op-type counts and the environment the file was made with."""
    model = record.model
    left, right = st.columns(2)
    with left:
        st.markdown("**Inputs / outputs**")
        st.dataframe([{"role": role, "name": io.name, "shape": str(io.shape), "dtype": io.dtype}
                      for role, ios in (("inputs", model.inputs), ("outputs", model.outputs)) for io in ios],
                     hide_index=True)
        st.markdown(f"Task: {task_label(model.task)} · architecture `{model.architecture}` · "
                    f"exporter `{model.exporter}` · IR {model.ir_version}")
        if model.class_names:
            st.caption("Classes: " + ", ".join(model.class_names))
    with right:
        st.markdown("**Operator counts**")
        st.dataframe([{"op": k, "count": v} for k, v in model.op_types.items()], hide_index=True, height=240)
    st.caption("Environment: " + ", ".join(f"{k} {v}" for k, v in record.environment.items() if v))
