"""The navigation frame: page config, sidebar with workspace and project picker, pages."""

from __future__ import annotations

import streamlit as st

from exporter.jobs import recover_interrupted
from exporter.workspace import Workspace
from ui.components import apply_goto, sticky_selectbox

PAGES = {"export": "app_pages/export.py", "history": "app_pages/history.py", "projects": "app_pages/projects.py"}


def run_frame() -> None:
    """Draw the shared chrome and run the selected page."""
    st.set_page_config(page_title="AI Studio Export", page_icon="📦", layout="wide")
    workspace = Workspace()
    recover_interrupted(workspace)  # exports whose worker died show as Interrupted, not running
    projects = workspace.projects()
    with st.sidebar:
        st.markdown("### 📦 AI Studio Export")
        st.caption(f"Workspace `{workspace.root}`")
        if projects:
            apply_goto()
            names = {p.id: p.name for p in projects}
            sticky_selectbox("Project", [p.id for p in projects], "project_id",
                             format_func=lambda i: names.get(i, i))
    pages = [st.Page(PAGES["export"], title="Export", icon="🚀", default=True),
             st.Page(PAGES["history"], title="History", icon="🗂️"),
             st.Page(PAGES["projects"], title="Projects", icon="📁")]
    st.navigation(pages).run()


def current_project_id(workspace: Workspace) -> str:
    """The project chosen in the sidebar (the first one until a choice is made)."""
    ids = [p.id for p in workspace.projects()]
    if st.session_state.get("project_id") not in ids:
        st.session_state["project_id"] = ids[0]
    return st.session_state["project_id"]


def go_to_export(project_id: str, experiment_id: str) -> None:
    """Open the Export page with this project and experiment preselected."""
    st.session_state["goto_project_id"] = project_id
    st.session_state["goto_experiment_id"] = experiment_id
    st.switch_page(PAGES["export"])
