"""The navigation frame: page config, sidebar with workspace and project picker, pages."""

from __future__ import annotations

from typing import Any

import streamlit as st

from exporter import queries
from exporter.jobs import recover_interrupted
from exporter.workspace import Workspace
from ui.widgets import apply_goto, sticky_selectbox

PAGES = {"export": "app_pages/export.py", "compare": "app_pages/compare.py", "history": "app_pages/history.py",
         "projects": "app_pages/projects.py"}


def run_frame() -> None:
    """Draw the shared chrome and run the selected page: pages in the top bar, the product and the
    project picker (most recently used first) in the sidebar."""
    st.set_page_config(page_title="AI Studio Export", page_icon="📦", layout="wide")
    workspace = Workspace()
    recover_interrupted(workspace)  # exports whose worker died show as Interrupted, not running
    projects = workspace.projects()
    with st.sidebar:
        st.markdown("### 📦 AI Studio Export")
        st.caption("Checkpoints → validated, evaluated deployable files.")
        if projects:
            apply_goto()
            names = {p.id: p.name for p in projects}
            chosen = sticky_selectbox("Project", project_order(projects), "project_id",
                                      format_func=lambda i: names.get(i, i))
            recent = st.session_state.setdefault("recent_projects", [])
            st.session_state["recent_projects"] = [chosen, *[r for r in recent if r != chosen]][:8]
        st.caption(f"Workspace `{workspace.root}`")
    pages = [st.Page(PAGES["export"], title="Export", icon=":material/rocket_launch:", default=True),
             st.Page(PAGES["compare"], title="Compare", icon=":material/scatter_plot:"),
             st.Page(PAGES["history"], title="History", icon=":material/history:"),
             st.Page(PAGES["projects"], title="Projects", icon=":material/folder:")]
    st.navigation(pages, position="top").run()


def project_order(projects: list[Any]) -> list[str]:
    """Project ids for the picker: those used in this browser session, most recent first, then the
    others by their latest export (the project worked on last comes first on a fresh visit)."""
    recent = [r for r in st.session_state.get("recent_projects", []) if r in {p.id for p in projects}]

    def last_export(project: Any) -> float:
        index = queries.index_file(Workspace(), project.id)
        return index.stat().st_mtime if index.is_file() else 0.0

    rest = sorted((p for p in projects if p.id not in recent), key=lambda p: (-last_export(p), p.id))
    return recent + [p.id for p in rest]


def open_project() -> tuple[Workspace, Any]:
    """The workspace and the project chosen in the sidebar; an empty workspace shows how to start, and
    the page stops there."""
    from ui.widgets import empty_workspace

    workspace = Workspace()
    if not workspace.projects():
        empty_workspace(workspace)
        st.stop()
    return workspace, workspace.project(current_project_id(workspace))


def current_project_id(workspace: Workspace) -> str:
    """The project chosen in the sidebar (the one worked on last until a choice is made)."""
    ids = [p.id for p in workspace.projects()]
    if st.session_state.get("project_id") not in ids:
        st.session_state["project_id"] = project_order(workspace.projects())[0]
    return st.session_state["project_id"]


def go_to_export(project_id: str, experiment_id: str) -> None:
    """Open the Export page with this project and experiment preselected."""
    st.session_state["goto_project_id"] = project_id
    st.session_state["goto_experiment_id"] = experiment_id
    st.switch_page(PAGES["export"])
