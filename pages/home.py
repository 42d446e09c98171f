"""Overview: the projects in the workspace."""

import streamlit as st

from exporter.workspace import Workspace

st.title("AI Studio Export")
projects = Workspace().projects()
if not projects:
    st.info("The workspace is empty. Build the demo with `python -m exporter demo`.")
for project in projects:
    st.subheader(project.name)
    st.caption(f"{project.id} · {project.task} · {len(project.experiments())} experiment(s)")
