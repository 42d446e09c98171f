"""Projects: browse projects, experiments, checkpoints and metrics; import a checkpoint; jump to Export."""

import streamlit as st

from exporter.dataset_attach import MAX_DATASET_ENV, attach_staged, max_dataset_bytes, val_set_summary
from exporter.errors import ExportError
from exporter.importer import ImportRequest
from exporter.tasks import metric_label, task_label, task_traits
from exporter.workspace import Workspace
from ui.frame import go_to_export
from ui.importing import import_fields, import_notice, import_with_code, inspect_staged, streamed_upload
from ui.widgets import empty_workspace

workspace = Workspace()
projects = workspace.projects()
if not projects:  # the welcome, and still the import: a workspace can start from the user's own model
    empty_workspace(workspace)
ids = [p.id for p in projects]

st.title("Projects")

with st.expander("➕ Import a model: a checkpoint (Lightning, state dict, timm; with your own model code), a "
                 "transformers or smp folder as .zip, or a .pt2 / TorchScript program",
                 expanded=not projects):
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
            waiting = fields is None or (fields.get("model_code", "") is None)  # code chosen, not yet given
            if st.button("Import", type="primary", key="import-go", disabled=not target or waiting):
                try:
                    experiment = import_with_code(workspace, ImportRequest(
                        target, **{k: v for k, v in fields.items() if k != "code_file"},
                        create_project=target not in ids, project_name=project_name), staged["upload_id"],
                        fields.get("code_file"))
                except ExportError as exc:
                    st.error(exc.message)
                else:  # Export opens with it preselected and says what was imported
                    st.session_state["import-round"] += 1  # a fresh picker next time
                    st.session_state["notice"] = import_notice(experiment, target)
                    st.session_state["goto_project_id"] = target  # applied by the frame when Export opens
                    st.session_state["goto_experiment_id"] = experiment["id"]
                    st.success(st.session_state["notice"])
                    st.page_link("app_pages/export.py", label="Export the imported checkpoint →", icon="🚀")
if not projects:
    st.stop()
with st.expander("📏 Attach a labelled validation set (evaluates every export on your data)", expanded=False):
    st.caption("A .zip of the set in its task's layout becomes the project's `data/val/` (replacing the one "
               "there). It is checked first — paths, file kinds, every image, the labels against the model's "
               "classes — and nothing changes unless all of it passes.")
    target = st.selectbox("Project", ids, key="dataset-project",
                          format_func=lambda i: f"{workspace.project(i).name} ({i})")
    traits = task_traits(workspace.project(target).task)
    st.caption(f"Layout for `{traits.name}`: `{traits.val_layout}`" if traits else "The project names no known task.")
    round_ = st.session_state.setdefault("dataset-round", 0)
    staged = streamed_upload(workspace.root, key=f"dataset-upload-{round_}", accept=".zip", slot="dataset",
                             label="Validation set (.zip)", limit=(max_dataset_bytes(), MAX_DATASET_ENV))
    if staged and st.button("Attach", type="primary", key="dataset-go"):
        try:
            info = attach_staged(workspace, target, staged["upload_id"])
        except ExportError as exc:
            st.error(exc.message)
        else:
            st.session_state["dataset-round"] += 1
            st.success(f"{'Replaced' if info['replaced'] else 'Attached'} `{target}/{info['path']}`: "
                       f"{info['images']} images ({info['layout']}). New exports evaluate on it; older ones "
                       "can be evaluated from their result view.")
for project in projects:
    with st.container(border=True):
        st.subheader(project.name)
        labelled = val_set_summary(project)
        st.caption(f"`{project.id}` · {task_label(project.task)} · {len(project.sample_images())} sample image(s) · "
                   + (f"labelled set: {labelled['images']} images in `{labelled['path']}`" if labelled
                      else "no labelled set (attach one above to evaluate exports on it)"))
        for experiment in project.experiments():
            cols = st.columns([3, 2, 3, 3, 2])
            cols[0].markdown(f"**{experiment.name}**  \n`{experiment.id}`")
            cols[1].markdown(f"`{experiment.model.get('architecture', '—')}`")
            cols[2].markdown("  \n".join(f"{metric_label(experiment.task, k)}: **{v:.4g}**" if isinstance(v, float)
                                         else f"{metric_label(experiment.task, k)}: **{v}**"
                                         for k, v in experiment.metrics.items()) or "—")
            cols[3].markdown("  \n".join(f"`{c.name}`{'' if c.epoch is None else f' epoch {c.epoch}'} · "
                                         f"{c.size_bytes / 1e6:.1f} MB"
                                         for c in experiment.checkpoints()) or "no checkpoints")
            if cols[4].button("Export →", key=f"go-{project.id}-{experiment.id}"):
                go_to_export(project.id, experiment.id)
