"""The navigation frame: page config, sidebar with workspace and project picker, pages."""

from __future__ import annotations

import streamlit as st

from exporter.workspace import Workspace


def run_frame() -> None:
    """Draw the shared chrome and run the selected page."""
    st.set_page_config(page_title="AI Studio Export", page_icon="📦", layout="wide")
    workspace = Workspace()
    with st.sidebar:
        st.markdown("### 📦 AI Studio Export")
        st.caption(f"Workspace: `{workspace.root}`")
    pages = [st.Page("pages/home.py", title="Overview", icon="🏠", default=True)]
    st.navigation(pages).run()
