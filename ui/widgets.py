"""Generic widgets the pages share: sticky choices, the facts row, option inputs, format cards, the side panel."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import streamlit as st

from exporter.workspace import Workspace


def sticky_selectbox(label: str, options: list[str], state_key: str, widget: Any = None, **kwargs: Any) -> str:
    """A selectbox (or ``widget=st.radio``) whose choice lives in ``st.session_state[state_key]``.

    Widget state of the navigation frame can be dropped between reruns; a plain key is not,
    and the widget is rebuilt from it each run. ``apply_goto`` sets both before a rerun.
    """
    if st.session_state.get(state_key) not in options:
        st.session_state[state_key] = options[0]
    widget_key = f"_{state_key}"

    def sync() -> None:
        st.session_state[state_key] = st.session_state[widget_key]

    if st.session_state.get(widget_key) not in options:  # seed (or re-seed) without changing identity
        st.session_state[widget_key] = st.session_state[state_key]
    (widget or st.selectbox)(label, options, key=widget_key, on_change=sync, **kwargs)
    return st.session_state[state_key]


def apply_goto() -> None:
    """Apply a jump requested by another page (``goto_<state_key>``) before any widget exists."""
    for key in [k for k in st.session_state if str(k).startswith("goto_")]:
        state_key = str(key)[len("goto_"):]
        st.session_state[state_key] = st.session_state[f"_{state_key}"] = st.session_state.pop(key)


def empty_workspace(workspace: Workspace) -> None:
    """Welcome screen with a button that builds the demo workspace, with live progress."""
    st.title("Welcome to AI Studio Export")
    st.write(f"The workspace `{workspace.root}` has no projects yet. Build the demo workspace to try "
             "everything: small models for classification, regression, anomaly detection, object detection, "
             "oriented detection and semantic and instance segmentation, "
             "trained for a few seconds on synthetic images.")
    if st.button("Build the demo workspace", type="primary", key="build_demo"):
        from demo import build_demo

        bar = st.progress(0.0, text="Starting…")
        build_demo(workspace.root, progress=lambda msg, frac: bar.progress(min(frac, 1.0), text=msg))
        st.success("Demo workspace ready.")
        st.rerun()


def facts(pairs: dict[str, Any]) -> None:
    """Named values side by side, wrapping instead of truncating (``st.metric`` cuts long values to "…")."""
    cells = {k: html.escape(str(v)) for k, v in pairs.items() if v not in (None, "")}
    items = "".join(f'<div><span class="aistudio-fact-name">{html.escape(k)}</span>'
                    f'<span class="aistudio-fact-value">{v}</span></div>' for k, v in cells.items())
    st.html(f'<div class="aistudio-facts">{items}</div>{_FACTS_CSS}')


_FACTS_CSS = """<style>
.aistudio-facts { display: flex; flex-wrap: wrap; gap: 0.4rem 2rem; margin: 0.25rem 0 0.5rem; }
.aistudio-facts > div { display: flex; flex-direction: column; min-width: 5rem; }
.aistudio-fact-name { font-size: 0.8rem; opacity: 0.65; }
.aistudio-fact-value { font-size: 1.15rem; font-weight: 600; overflow-wrap: anywhere; }
</style>"""


def option_inputs(specs: list[Any], defaults: dict[str, Any], key: str) -> dict[str, Any]:
    """One widget per declared option (no per-format code), by its human label: the basic ones first,
    the rest under "Advanced", and only those that apply to the values chosen so far (no INT8
    quantization at fp32). Returns the raw values; the engine parses and checks them, so a bad
    entry comes back as its error.
    """
    values: dict[str, Any] = {}
    _option_grid([s for s in specs if not s.advanced], defaults, key, values)
    advanced = [s for s in specs if s.advanced]
    if advanced:
        with st.expander(f"Advanced options ({len(advanced)})"):
            _option_grid(advanced, defaults, key, values)
    return values


def _option_grid(specs: list[Any], defaults: dict[str, Any], key: str, values: dict[str, Any]) -> None:
    shown = 0
    columns = st.columns(2)
    for spec in specs:
        if not spec.applies(values):
            continue
        with columns[shown % 2]:
            values[spec.name] = _option_widget(spec, defaults.get(spec.name, spec.default), f"{key}-{spec.name}")
        shown += 1


def _option_widget(spec: Any, default: Any, widget_key: str) -> Any:
    label = spec.title
    if spec.kind == "bool":
        return st.checkbox(label, value=bool(default), help=spec.help, key=widget_key)
    if spec.kind == "choice":
        return st.selectbox(label, spec.choices, index=spec.choices.index(default), help=spec.help, key=widget_key)
    if spec.kind == "int":  # no default: empty, the model's own setting
        return st.number_input(label, value=None if default is None else int(default), step=1, help=spec.help,
                               key=widget_key, placeholder=spec.placeholder if default is None else None,
                               min_value=int(spec.minimum) if spec.minimum is not None else None,
                               max_value=int(spec.maximum) if spec.maximum is not None else None)
    # float and shape as text: 1e-4 and 1,3,224,224 type naturally
    shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else (
        "" if default is None else str(default))
    return st.text_input(label, value=shown, help=spec.help, key=widget_key,
                         placeholder=spec.placeholder if default is None else None)


def format_cards(formats: list[dict[str, Any]], key: str) -> str:
    """The format picker: one card per format, two per row; the chosen card's button is filled, an
    unavailable card says why and cannot be chosen. Returns the chosen format's name."""
    available = [f["name"] for f in formats if f["available"]]
    if st.session_state.get(key) not in available:
        st.session_state[key] = available[0]
    for row in range(0, len(formats), 2):
        for column, fmt in zip(st.columns(2), formats[row:row + 2], strict=False):
            chosen = fmt["name"] == st.session_state[key]
            with column.container(border=True):
                st.button(f"{fmt['display_name']} · {fmt['suffix']}", key=f"{key}-{fmt['name']}",
                          icon=":material/check_circle:" if chosen else None, width="stretch",
                          type="primary" if chosen else "secondary", disabled=not fmt["available"],
                          on_click=st.session_state.__setitem__, args=(key, fmt["name"]))
                st.caption(f":material/block: {fmt['reason']}" if not fmt["available"] else
                           f":material/info: {fmt['note']}" if fmt["note"] else "Available here")
    return st.session_state[key]


def side_panel(column: Any) -> Any:
    """The container beside the form that shows the running export and its result (a phone stacks
    it under the form)."""
    return column.container(key="side-panel")


def bring_into_view(token: str, selector: str = ".st-key-side-panel") -> None:
    """Scroll the page so ``selector`` is at the top of the window, once per ``token``."""
    _scroller(key=f"scroll-{token}", data={"token": token, "selector": selector})


_scroller = st.components.v2.component(
    "aistudio_scroll_into_view", html="<span></span>",
    js=(Path(__file__).with_name("static") / "scroll.js").read_text())
