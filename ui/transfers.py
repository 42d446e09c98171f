"""Downloads and the API from the browser: a session's ticket, API links, the streamed download of an export."""

from __future__ import annotations

import html
import time
from urllib.parse import quote

import streamlit as st

from exporter.api import TICKET_TTL_S, page_ticket
from exporter.record import ExportRecord


def session_ticket() -> str | None:
    """This browser session's ticket for the API routes its widgets call (``None`` without a token)."""
    ticket, issued = st.session_state.get("page_ticket", (None, 0.0))
    if time.time() - issued > TICKET_TTL_S / 2:  # renewed well before it expires
        ticket, issued = st.session_state["page_ticket"] = (page_ticket(), time.time())
    return ticket


def api_url(path: str) -> str:
    """``/api/<path>`` under the server's base URL path."""
    base = "/" + st.get_option("server.baseUrlPath").strip("/")
    return base.rstrip("/") + "/api/" + path.lstrip("/")


def download_section(record: ExportRecord) -> None:
    """A download link to the streamed API route (one file, or a zip of several).

    A plain link, not ``st.download_button``: the browser fetches the file from disk on its own
    (Range, ETag), so no rerun of the page — a progress timer, another export finishing — can
    cancel a download in flight, and no file is held in the server's memory.
    """
    path = f"export/{record.id}/download"
    name = record.files[0].name if len(record.files) == 1 else f"{record.id}-{record.format}.zip"
    href = api_url(path) + (f"?ticket={quote(ticket)}" if (ticket := session_ticket()) else "")
    size = sum(f.size_bytes for f in record.files) / 1e6
    st.html(f'<a class="aistudio-download" href="{html.escape(href)}" download="{html.escape(name)}" '
            f'role="button">⬇️ Download {html.escape(name)}</a>'
            f'<span class="aistudio-download-size">{size:.1f} MB, streamed</span>' + _DOWNLOAD_CSS)
    st.caption(f"API: `GET /api/{path}`")


_DOWNLOAD_CSS = """<style>
a.aistudio-download { display: inline-block; padding: 0.4rem 0.9rem; border-radius: 0.5rem;
  background: #ff4b4b; color: #fff !important; text-decoration: none !important; font-weight: 500; }
a.aistudio-download:hover { background: #e03e3e; }
.aistudio-download-size { margin-left: 0.75rem; opacity: 0.7; font-size: 0.9rem; }
</style>"""
