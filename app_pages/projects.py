"""Projects: browse projects, experiments, checkpoints and metrics; import a checkpoint; jump to Export."""

import streamlit as st

from exporter.errors import ExportError
from exporter.importer import ImportRequest, import_checkpoint, parse_input_size, receive_upload
from exporter.models.task_options import BUILTIN_TASKS
from exporter.workspace import Workspace
from ui.components import empty_workspace
from ui.frame import go_to_export

workspace = Workspace()
projects = workspace.projects()
if not projects:
    empty_workspace(workspace)
    st.stop()

st.title("Projects")

with st.expander("➕ Import a checkpoint (Lightning, state dict, timm)", expanded=False):
    st.caption("Task, architecture, classes and input size come from the file where it says them; leave a "
               "field blank to use that (for classifiers the architecture is detected from the weights). "
               "Nothing is written unless the weights load and the model runs. Files over "
               f"{st.get_option('server.maxUploadSize')} MB: use `python -m exporter import` or "
               "`POST /api/projects/{id}/experiments`.")
    new_project = "➕ new project"
    target = st.selectbox("Into project", [new_project] + [p.id for p in projects], key="import-project")
    if target == new_project:
        left, right = st.columns(2)
        target = left.text_input("New project id", key="import-new-id", placeholder="my-project")
        project_name = right.text_input("New project name", key="import-new-name")
    else:
        project_name = None
    upload = st.file_uploader("Checkpoint file", type=["ckpt", "pt", "pth", "bin"], key="import-file")
    cols = st.columns(4)
    task = cols[0].selectbox("Task", ["(from the file)", *BUILTIN_TASKS],
                             key="import-task")
    architecture = cols[1].text_input("Architecture", key="import-arch", placeholder="detect, or timm/<name>")
    num_classes = cols[2].number_input("Classes (0 = from the file)", min_value=0, value=0, key="import-classes")
    input_size = cols[3].text_input("Input size C,H,W", key="import-size", placeholder="3,224,224")
    name = st.text_input("Experiment name", key="import-name", placeholder="the file's name")
    if st.button("Import", type="primary", key="import-go", disabled=upload is None or not target):
        try:
            request = ImportRequest(target, task=None if task.startswith("(") else task,
                                    architecture=architecture.strip() or None, num_classes=num_classes or None,
                                    input_size=parse_input_size(input_size), name=name.strip() or None,
                                    create_project=target not in [p.id for p in projects],
                                    project_name=project_name or None)
            with receive_upload(workspace.root) as (path, sink):
                view = upload.getbuffer()
                for start in range(0, len(view), 1 << 20):
                    sink(bytes(view[start:start + (1 << 20)]))
                experiment = import_checkpoint(workspace, request, path, filename=upload.name)
        except ExportError as exc:
            st.error(exc.message)
        else:  # Export opens with it preselected and says what was imported
            model = experiment["model"]
            detected = experiment["detected"]
            st.session_state["notice"] = (
                f"Imported `{experiment['id']}` into `{target}`: {model['task']} · `{model['architecture']}` · "
                f"{model.get('num_classes')} classes · input {model.get('input_size')}"
                + (f" (detected from the weights, {detected[0]['confidence']:.0%} match)" if detected else ""))
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
