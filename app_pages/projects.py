"""Projects: browse projects, experiments, checkpoints and metrics; import a checkpoint; jump to Export."""

import streamlit as st

from exporter.errors import ExportError
from exporter.importer import ImportRequest, import_staged
from exporter.workspace import Workspace
from ui.components import empty_workspace
from ui.frame import go_to_export
from ui.importing import import_fields, import_notice, inspect_staged, streamed_upload

workspace = Workspace()
projects = workspace.projects()
if not projects:
    empty_workspace(workspace)
    st.stop()
ids = [p.id for p in projects]

st.title("Projects")

with st.expander("➕ Import a checkpoint (Lightning, state dict, timm)", expanded=False):
    st.caption("The file goes to the server first (streamed, any size up to the limit); then check what it says "
               "about itself and which architectures its weights fit, fill in what it does not say, and import. "
               "Nothing is added to the project unless the weights load and the model runs.")
    new_project = "➕ new project"
    target = st.selectbox("Into project", [new_project] + [p.id for p in projects], key="import-project")
    project_name = None
    if target == new_project:
        left, right = st.columns(2)
        target = left.text_input("New project id", key="import-new-id", placeholder="my-project")
        project_name = right.text_input("New project name", key="import-new-name") or None
    staged = streamed_upload(workspace.root, key=f"import-upload-{st.session_state.setdefault('import-round', 0)}")
    if staged:
        try:
            about = inspect_staged(workspace.root, staged["upload_id"])
        except ExportError as exc:
            st.error(exc.message)
        else:
            fields = import_fields(about, workspace.project(target).task if target in ids else None,
                                   key=staged["upload_id"][:8])
            if st.button("Import", type="primary", key="import-go", disabled=not target or fields is None):
                try:
                    experiment = import_staged(workspace, ImportRequest(
                        target, **fields, create_project=target not in ids, project_name=project_name),
                        staged["upload_id"])
                except ExportError as exc:
                    st.error(exc.message)
                else:  # Export opens with it preselected and says what was imported
                    st.session_state["import-round"] += 1  # a fresh picker next time
                    st.session_state["notice"] = import_notice(experiment, target)
                    st.session_state["goto_project_id"] = target  # applied by the frame when Export opens
                    st.session_state["goto_experiment_id"] = experiment["id"]
                    st.success(st.session_state["notice"])
                    st.page_link("app_pages/export.py", label="Export the imported checkpoint →", icon="🚀")
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
