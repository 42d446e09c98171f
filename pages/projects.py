"""Projects: browse projects, experiments, checkpoints and metrics; jump to Export preselected."""

import streamlit as st

from exporter.workspace import Workspace
from ui.components import empty_workspace
from ui.frame import go_to_export

workspace = Workspace()
projects = workspace.projects()
if not projects:
    empty_workspace(workspace)
    st.stop()

st.title("Projects")
for project in projects:
    with st.container(border=True):
        st.subheader(project.name)
        st.caption(f"`{project.id}` · task `{project.task}` · {len(project.sample_images())} sample image(s)")
        for experiment in project.experiments():
            cols = st.columns([3, 2, 3, 3, 2])
            cols[0].markdown(f"**{experiment.name}**  \n`{experiment.id}`")
            cols[1].markdown(f"`{experiment.model.get('architecture', '—')}`")
            cols[2].markdown("  \n".join(f"{k}: **{v:.4g}**" if isinstance(v, float) else f"{k}: **{v}**"
                                         for k, v in experiment.metrics.items()) or "—")
            cols[3].markdown("  \n".join(f"`{c.name}` epoch {c.epoch} · {c.size_bytes / 1e6:.1f} MB"
                                         for c in experiment.checkpoints()) or "no checkpoints")
            if cols[4].button("Export →", key=f"go-{project.id}-{experiment.id}"):
                go_to_export(project.id, experiment.id)
