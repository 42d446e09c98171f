"""Background jobs started from the result view: a button that starts one, and a panel that waits for it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from exporter.errors import ExportError
from exporter.workspace import Workspace


def start_button(label: str, key: str, help_text: str, start: Callable[[], Any]) -> None:
    """A button that starts a job with ``start()``; its refusal is shown, a start reruns the page."""
    if st.button(label, key=key, help=help_text):
        try:
            start()
        except ExportError as exc:
            st.error(exc.message)
        else:
            st.rerun()


@st.fragment(run_every=2.0)
def waiting_panel(export_id: str, part: str, message: str) -> None:
    """Shown while the export's ``part`` (evaluation, diagnosis) is being made; reruns the page once it ends."""
    from exporter.jobs import refresh

    if getattr(refresh(Workspace(), export_id), part).status != "running":
        st.rerun()
    st.info(message)
