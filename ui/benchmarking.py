"""Speed in the dashboard: the result view's Benchmark tab (start, follow, cancel, read) and the Compare
chart (latency against accuracy change, one bubble per export)."""

from __future__ import annotations

import html
from typing import Any

import streamlit as st

from exporter.benchmark import default_seconds
from exporter.machine import this_machine_id
from exporter.record import Benchmark, ExportRecord
from exporter.workspace import Workspace
from ui.jobs import start_button

RUNTIME_NAMES = {"file": "exported file", "pytorch": "PyTorch eager"}


def benchmark_section(record: ExportRecord) -> None:
    """The latest benchmark of this export (running, failed or its figures), earlier ones, and the button."""
    latest = record.benchmarks[-1] if record.benchmarks else None
    if latest is not None and latest.status in ("queued", "running"):
        _benchmark_progress(record.id)
        return
    if latest is None:
        st.caption("Not benchmarked yet. A benchmark times this file in its runtime as deployed, and PyTorch eager "
                   "on the same checkpoint, on this machine with the same threads and inputs: load time, first "
                   "run, p50/p90/p99 latency and throughput per batch size, peak memory.")
    elif latest.status == "failed":
        st.error(f"Benchmark failed: **{latest.error.type}**: {latest.error.message}")
    shown = record.benchmark
    if shown is not None:
        benchmark_result(shown)
    earlier = [b for b in record.benchmarks if b.status == "completed" and b is not shown]
    if earlier:
        with st.expander(f"Earlier benchmarks ({len(earlier)})"):
            st.dataframe([_history_row(b) for b in reversed(earlier)], hide_index=True, width="stretch")
    _benchmark_button(record)


def benchmark_result(bench: Benchmark) -> None:
    """Headline figures, where it ran, the latency distributions and the full table."""
    from ui.widgets import facts

    file, eager = bench.results.get("file") or {}, bench.results.get("pytorch") or {}
    head = bench.headline()
    facts({f"p50 · batch {head['batch']}": _ms(head["p50_ms"]),
           f"vs PyTorch eager · batch {head['batch']}": _times(head["speedup"]),
           f"throughput · batch {head['throughput_batch']}": f"{head['throughput_ips']:,.1f} img/s",
           "load": f"{file.get('load_s', 0):.2f} s", "first run": _ms(file.get("first_inference_s", 0) * 1e3),
           "peak memory": f"+{head['peak_mb'] or 0:,.0f} MB"})
    machine = bench.machine
    where = (f"{machine.get('cpu')} · {machine.get('physical_cores')} cores · {bench.threads} threads"
             + (f" · {machine['gpu']}" if machine.get("gpu") else "")
             + (f" · {', '.join(machine['isa'])}" if machine.get("isa") else ""))
    if machine.get("id") != this_machine_id():
        st.warning(f"Taken on another machine ({machine.get('host')}: {where}) — benchmark again to measure here.")
    else:
        st.caption(f"On this machine: {where} · {bench.finished_at} · the job took {bench.duration_s:.0f} s")
    settings = file.get("settings") or {}
    st.caption("Runtime as deployed: " + ", ".join(f"{k} {v}" for k, v in settings.items()))
    if bench.deploy_check:
        _deploy_check(bench.deploy_check)
    st.plotly_chart(latency_figure(bench), key=f"latency-{bench.id}")
    st.dataframe([{"runtime": RUNTIME_NAMES.get(runtime, runtime), "batch": row["batch"], "p50 ms": row["p50_ms"],
                   "p90 ms": row["p90_ms"], "p99 ms": row["p99_ms"], "mean ms": row["mean_ms"],
                   "img/s": row["throughput_ips"], "runs": row["runs"]}
                  for runtime, result in (("file", file), ("pytorch", eager)) for row in result.get("batches", [])],
                 hide_index=True, width="stretch")


def _deploy_check(check: dict[str, Any]) -> None:
    validation, evaluation = check.get("validation") or {}, check.get("evaluation") or {}
    text = (f"Deployed, this runtime computes in **{check['precision']}** — not the precision validation ran at — "
            f"so the file was checked again at {check['precision']}: validation **{validation.get('verdict')}** "
            f"(max |diff| {validation.get('max_diff', 0):.2e}, tolerance {validation.get('tolerance')})")
    if evaluation.get("drop") is not None:
        text += f"; {evaluation['primary_metric']} changes by {-evaluation['drop']:+.4f} on the labelled set"
    say = st.info if validation.get("verdict") == "passed" and evaluation.get("verdict") in (None, "passed") \
        else st.warning
    say(text + ". Compare uses these figures for it.")


def latency_figure(bench: Benchmark):
    """Box plots of the timed runs, file beside PyTorch eager, one pair per batch size (log scale)."""
    import plotly.graph_objects as go

    figure = go.Figure()
    for runtime, colour in (("file", "#1f77b4"), ("pytorch", "#ff7f0e")):
        rows = (bench.results.get(runtime) or {}).get("batches") or []
        xs = [f"batch {row['batch']}" for row in rows for _ in row["latencies_ms"]]
        ys = [v for row in rows for v in row["latencies_ms"]]
        figure.add_box(x=xs, y=ys, name=RUNTIME_NAMES[runtime], marker_color=colour, boxpoints="outliers",
                       hovertemplate="%{y:.2f} ms<extra>" + RUNTIME_NAMES[runtime] + "</extra>")
    figure.update_layout(boxmode="group", height=360, margin={"t": 50, "b": 40, "l": 10, "r": 10},
                         title="Latency of each timed run (lower is better)",
                         yaxis={"type": "log", "title": "ms per batch"},
                         legend={"orientation": "h", "yanchor": "top", "y": -0.15, "x": 0})
    return figure


def _history_row(bench: Benchmark) -> dict[str, Any]:
    head = bench.headline()
    return {"when": bench.finished_at, "machine": bench.machine.get("cpu"), "host": bench.machine.get("host"),
            "here": "yes" if head["machine_id"] == this_machine_id() else "another machine",
            "threads": bench.threads, "batch": head["batch"], "p50 ms": head["p50_ms"], "× eager": head["speedup"]}


def _benchmark_button(record: ExportRecord) -> None:
    from exporter.jobs import start_benchmark

    with st.expander("Benchmark settings"):
        left, middle, right = st.columns(3)
        batches = left.text_input("Batch sizes", "1,8" if record.options.get("dynamic_batch", True) else "",
                                  key=f"bench-batches-{record.id}", help="comma-separated; empty: the file's own")
        threads = middle.number_input("Threads", min_value=1, value=None, key=f"bench-threads-{record.id}",
                                      placeholder="physical cores")
        seconds = right.number_input("Seconds per batch size", min_value=0.1, max_value=120.0, value=default_seconds(),
                                     key=f"bench-seconds-{record.id}")
    start_button("⏱ Benchmark on this machine", f"benchmark-{record.id}",
                 "Time this file and PyTorch eager here; the job has the machine to itself",
                 lambda: start_benchmark(Workspace(), record.id,
                                         {"batch_sizes": batches, "threads": threads, "seconds": seconds}))


@st.fragment(run_every=1.0)
def _benchmark_progress(export_id: str) -> None:
    """Shown while a benchmark is queued or runs: its stage and a Cancel button; reruns the page at the end."""
    from exporter.jobs import cancel_benchmark, refresh

    record = refresh(Workspace(), export_id)
    latest = record.benchmarks[-1] if record.benchmarks else None
    if latest is None or latest.status not in ("queued", "running"):
        st.rerun()
    label = "queued behind its export" if latest.status == "queued" else latest.progress.stage
    left, right = st.columns([5, 1], vertical_alignment="bottom")
    left.progress(latest.progress.fraction, text=f"⏱ Benchmarking · {label} · {latest.progress.fraction:.0%}")
    if right.button("Cancel", key=f"cancel-bench-{export_id}"):
        cancel_benchmark(Workspace(), export_id)
        st.rerun()


def compare_figure(rows: list[dict[str, Any]], front: list[str], baseline: dict[str, Any] | None, metric: str):
    """Latency (log x) against the metric's change from PyTorch; bubble area ~ file size, colour = format;
    the Pareto front joined by a line; PyTorch eager as a star at 0. Points carry their export id."""
    import plotly.graph_objects as go
    from plotly.colors import qualitative

    figure = go.Figure()
    plotted = [r for r in rows if r["p50_ms"] is not None and r["change"] is not None]
    biggest = max([r["size_mb"] or 0 for r in plotted] + [1e-6])
    for n, name in enumerate(sorted({r["display_format"] for r in plotted})):
        mine = [r for r in plotted if r["display_format"] == name]
        figure.add_scatter(
            x=[r["p50_ms"] for r in mine], y=[r["change"] for r in mine], mode="markers", name=name,
            marker={"size": [14 + 36 * ((r["size_mb"] or 0) / biggest) ** 0.5 for r in mine], "opacity": 0.8,
                    "color": qualitative.Plotly[n % len(qualitative.Plotly)], "line": {"width": 1, "color": "#333"}},
            customdata=[[r["id"], r["variant"], r["size_mb"] or 0, r["validation"], r["runs_at"] or ""] for r in mine],
            hovertemplate="<b>%{customdata[0]}</b> · " + html.escape(name) + " %{customdata[1]}<br>"
                          "p50 %{x:.2f} ms · change %{y:+.4f}<br>%{customdata[2]:.1f} MB · validation "
                          "%{customdata[3]} %{customdata[4]}<extra>click to open</extra>")
    by_id = {r["id"]: r for r in plotted}
    if front:  # ringed, and joined when there are several
        figure.add_scatter(x=[by_id[i]["p50_ms"] for i in front], y=[by_id[i]["change"] for i in front],
                           mode="lines+markers" if len(front) > 1 else "markers", name="Pareto front",
                           line={"dash": "dot", "color": "#2ca02c", "width": 2}, hoverinfo="skip",
                           marker={"symbol": "circle-open", "size": 54, "color": "#2ca02c", "line": {"width": 2}})
    if baseline:
        figure.add_scatter(x=[baseline["p50_ms"]], y=[0.0], mode="markers+text", name="PyTorch eager",
                           marker={"symbol": "star", "size": 18, "color": "#444"}, text=["PyTorch"],
                           textposition="top center", hovertemplate="PyTorch eager: p50 %{x:.2f} ms<extra></extra>")
    figure.update_layout(
        title={"text": f"Latency vs {metric} change<br><sup>best: up and to the left · bubble area: file size<br>"
                       "green rings: the Pareto front · click a bubble to open it</sup>"},
        xaxis=_log_axis([r["p50_ms"] for r in plotted] + ([baseline["p50_ms"]] if baseline else [])),
        yaxis={"title": f"{metric} change vs PyTorch", "zeroline": True, "tickformat": "+.3~f",
               "exponentformat": "none"},
        legend={"orientation": "h", "yanchor": "top", "y": -0.25, "x": 0, "itemsizing": "constant"}, height=480,
        margin={"t": 110, "b": 40, "l": 10, "r": 10}, clickmode="event+select")
    return figure


def _log_axis(values: list[float]) -> dict[str, Any]:
    """A log latency axis that reaches its 1-2-5 ticks on both sides, with room for a bubble at either end."""
    import math

    ticks = _log_ticks(values)
    low, high = min([*values, *ticks], default=1.0), max([*values, *ticks], default=1.0)
    pad = 0.05 + 0.06 * math.log10(high / low)  # room for the largest bubble at either end
    return {"type": "log", "title": "p50 latency, ms (log)", "tickvals": ticks,
            "range": [math.log10(low) - pad, math.log10(high) + pad]}


def _log_ticks(values: list[float]) -> list[float]:
    """1-2-5 ticks spanning ``values`` (plotly's own log ticks label 0.8 and 0.9 as "8" and "9"); where fewer than
    two fall among them (5.8–8.4 ms drew an axis with no label), the nearest below and above them too."""
    import math

    low, high = min(values, default=1.0), max(values, default=1.0)
    steps = [m * 10 ** e for e in range(math.floor(math.log10(low)) - 1, math.ceil(math.log10(high)) + 2)
             for m in (1, 2, 5)]
    ticks = [t for t in steps if low / 1.5 <= t <= high * 1.5]
    if len([t for t in ticks if low <= t <= high]) < 2:
        ticks = sorted({*ticks, max(t for t in steps if t <= low), min(t for t in steps if t >= high)})
    return ticks


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:,.2f} ms"


def _times(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}× faster" if value >= 1 else f"{1 / value:.2f}× slower"
