"""The result view's Deploy tab: the bundle per target (refusals with their reasons), Try it live (the bundle's
server started here, an image answered beside PyTorch's) and the load test (concurrency 1, 4 and 16)."""

from __future__ import annotations

import html
from urllib.parse import quote

import streamlit as st

from exporter.deploy import TARGETS, live, refusal
from exporter.errors import ExportError
from exporter.formats import get_format
from exporter.record import ExportRecord, Serving
from exporter.workspace import Workspace
from ui.transfers import api_url, session_ticket

TARGET_LABELS = {"triton": "Triton Inference Server", "ovms": "OpenVINO Model Server",
                 "kserve": "KServe InferenceService",
                 "server": "Server of its own (Open Inference Protocol + /predict)"}


def deploy_section(record: ExportRecord) -> None:
    """Bundle download, Try it live, Load test."""
    _bundle(record)
    st.divider()
    _try_it_live(record)


def _bundle(record: ExportRecord) -> None:
    fmt = get_format(record.format, require_available=False)
    refused = {t: why for t in TARGETS if (why := refusal(fmt, t))}
    allowed = [t for t in TARGETS if t not in refused]
    st.markdown("**Deploy bundle** — what a serving engine needs, written from this record; the server of its own "
                "is started and answers its golden samples before the bundle is handed over.")
    chosen = st.pills("Targets", allowed, selection_mode="multi", default=allowed, format_func=TARGET_LABELS.get,
                      key=f"deploy-targets-{record.id}")
    for target, why in refused.items():
        st.caption(f"✖ {TARGET_LABELS[target]}: {why}")
    if not chosen:
        st.info("Choose at least one target.")
        return
    target = ",".join(chosen)
    query = f"target={quote(target)}" + (f"&ticket={quote(ticket)}" if (ticket := session_ticket()) else "")
    href = api_url(f"export/{record.id}/deploy/download") + "?" + query
    st.html(f'<a class="aistudio-download" href="{html.escape(href)}" download role="button">📦 Download the bundle'
            f'</a><span class="aistudio-download-size">{len(chosen)} target(s), zip, streamed</span>')
    st.caption(f"CLI: `python -m exporter deploy {record.id} --target {target}` · API: "
               f"`POST /api/export/{record.id}/deploy?target={target}`")


def _try_it_live(record: ExportRecord) -> None:
    st.markdown("**Try it live** — the bundle's server on this machine (loopback), answering as it will deployed.")
    if refusal(get_format(record.format, require_available=False), "server"):
        st.caption("This format has no server of its own (see above).")
        return
    server = live.running(record.id)
    if server is None:
        if st.button("▶ Start the server", key=f"serve-{record.id}"):
            with st.spinner("Writing the server bundle and starting it…"):
                try:
                    live.serve_export(Workspace(), record.id)
                except ExportError as exc:
                    st.error(exc.message)
                    return
            st.rerun()
        _serving_figures(record.serving)
        return
    left, right = st.columns([4, 1])
    left.success(f"Serving **{server.model_name}** at {server.url} — `POST /predict` with an image, "
                 f"`/v2/models/{server.model_name}/infer` with tensors")
    if right.button("■ Stop", key=f"stop-{record.id}"):
        live.stop_serving(record.id)
        st.rerun()
    _try_image(record, server)
    _load_test(record)


def _try_image(record: ExportRecord, server: live.LiveServer) -> None:
    upload = st.file_uploader("Drop an image", type=["png", "jpg", "jpeg", "bmp", "webp"],
                              key=f"try-upload-{record.id}")
    use_sample = st.button("Use the golden sample image", key=f"try-sample-{record.id}")
    image = upload.getvalue() if upload is not None else (server.sample() if use_sample else None)
    remembered = f"try-answer-{record.id}"
    if image is not None:
        try:
            st.session_state[remembered] = live.try_image(Workspace(), record.id, image)
        except ExportError as exc:
            st.error(exc.message)
            return
    answer = st.session_state.get(remembered)
    if answer is None:
        return
    with st.container(key=f"try-result-{record.id}"):
        left, right = st.columns([3, 2])
        left.image(answer["picture"], caption="PyTorch (left) and the served file (right), drawn the same way")
        right.json(answer["predict"], expanded=2)


def _load_test(record: ExportRecord) -> None:
    seconds = live.load_test_seconds()
    if st.button(f"⏱ Load test ({seconds:g} s at concurrency 1, 4 and 16)", key=f"load-{record.id}"):
        with st.spinner("Sending requests from 1, 4 and 16 clients…"):
            record = live.measure(Workspace(), record.id, seconds)
    _serving_figures(record.serving)


def _serving_figures(serving: Serving | None) -> None:
    """The last load test: requests/s and p50/p99 per concurrency, and the overhead over the bare file."""
    if serving is None:
        return
    from plotly.subplots import make_subplots

    levels = serving.levels
    clients = [str(level["concurrency"]) for level in levels]
    figure = make_subplots(rows=1, cols=2, subplot_titles=("requests/s", "latency (ms)"))
    figure.add_bar(x=clients, y=[level["requests_per_s"] for level in levels], name="requests/s", row=1, col=1)
    for key in ("p50_ms", "p99_ms"):
        figure.add_scatter(x=clients, y=[level[key] for level in levels], name=key.split("_")[0], mode="lines+markers",
                           row=1, col=2)
    figure.update_xaxes(title_text="concurrent clients", type="category")
    figure.update_layout(height=300, margin={"t": 40, "b": 10, "l": 10, "r": 10})
    with st.container(key="serving-chart"):
        st.plotly_chart(figure, width="stretch")
    first = levels[0] if levels else {}
    bare = serving.bare_p50_ms
    overhead = (f" · serving overhead at concurrency 1: {first['p50_ms'] - bare:+.2f} ms over the file's bare p50 "
                f"({bare:.2f} ms, its benchmark)" if bare and first.get("p50_ms") else "")
    st.caption(f"{serving.batching.get('server')}, {serving.batching.get('batching')} · {serving.measured_at} · "
               f"{serving.machine.get('cpu')}{overhead}")
