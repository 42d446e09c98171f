"""The import form's parts: a streamed file picker, what the file says, the fields it leaves open.

``st.file_uploader`` holds the whole file in the server's memory (capped at
``server.maxUploadSize``); checkpoints can be several GB. The picker here is a small component
that sends the file as the raw body of one request to ``POST /api/uploads``, which writes it to
disk in chunks and stages it under an id; the page then imports it with the same service
function as the CLI and the API.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import streamlit as st

from exporter.checkpoint import MAX_CHECKPOINT_ENV, max_checkpoint_bytes
from exporter.errors import ExportError
from exporter.families.code import ALLOW_ENV, code_allowed
from exporter.importer import (
    discard_upload,
    inspect_checkpoint,
    parse_class_names,
    parse_input_size,
    parse_json_object,
    staged_upload,
)
from exporter.tasks import DEFAULT_TASK, task_names
from ui.transfers import api_url, session_ticket

_STATIC = Path(__file__).with_name("static")
_picker = st.components.v2.component(
    "aistudio_checkpoint_upload", html=(_STATIC / "upload.html").read_text(),
    css=(_STATIC / "upload.css").read_text(), js=(_STATIC / "upload.js").read_text())
OTHER = "other…"


def streamed_upload(root: Path, key: str, accept: str = ".ckpt,.pt,.pth,.bin,.zip,.pt2,.torchscript,.ts",
                    slot: str = "checkpoint",
                    label: str = "Checkpoint file", limit: tuple[int, str] | None = None) -> dict[str, Any] | None:
    """The staged upload (``{"upload_id", "filename", "size_bytes"}``) once the file is on the server;
    a file this session staged before in the same ``slot`` and replaced is removed.

    ``limit`` is ``(bytes, the variable that sets it)``; ``/api/uploads`` takes no more than a checkpoint.
    """
    ticket = session_ticket()
    limit_bytes, limit_env = min(limit or (max_checkpoint_bytes(), MAX_CHECKPOINT_ENV),
                                 (max_checkpoint_bytes(), MAX_CHECKPOINT_ENV))
    result = _picker(key=key, on_upload_change=lambda: None,
                     data={"url": api_url("uploads"), "accept": accept, "max_bytes": limit_bytes, "label": label,
                           "limit": f"{limit_bytes >> 20} MiB", "limit_env": limit_env, "ticket": ticket})
    upload = result.get("upload") if result else None
    previous = st.session_state.get(f"staged_upload_id-{slot}")
    if upload and previous not in (None, upload["upload_id"]):
        with contextlib.suppress(ExportError):
            discard_upload(root, previous)
    if upload:
        st.session_state[f"staged_upload_id-{slot}"] = upload["upload_id"]
    return upload


@st.cache_data(max_entries=16, show_spinner="Reading the file and matching its weights against known architectures…")
def inspect_staged(root: Path, upload_id: str) -> dict[str, Any]:
    """``inspect_checkpoint`` of a staged upload, plus its ``filename`` (read once per upload)."""
    path, info = staged_upload(root, upload_id)
    return {**inspect_checkpoint(path), "filename": info["filename"]}


def import_fields(about: dict[str, Any], project_task: str | None, key: str) -> dict[str, Any] | None:
    """Task, architecture, classes, input size and name, prefilled from the file and the detected
    architectures; ``None`` while a field is invalid (the reason is shown under it)."""
    hp, candidates = about["hyper_parameters"], about["candidates"]
    said = [f"{k} **{hp[k]}**" for k in ("task", "architecture", "num_classes", "input_size") if hp.get(k)]
    st.caption(f"`{about['filename']}`: {about['tensors']} tensors · "
               + (f"the file says {', '.join(said)}" if said else "no hyper-parameters in the file")
               + ("" if hp.get("architecture") else " · the weights fit: " + (", ".join(
                   f"`{c['architecture']}` {c['confidence']:.0%}" for c in candidates) or "no known architecture")))
    best = candidates[0] if candidates and not hp.get("architecture") else {}
    task = hp.get("task") or project_task or DEFAULT_TASK
    tasks = task_names()
    cols = st.columns(4)
    task = cols[0].selectbox("Task", tasks, index=tasks.index(task) if task in tasks else 0, key=f"import-task-{key}")
    if best:
        shown = {c["architecture"]: f"{c['architecture']} ({c['confidence']:.0%})" for c in candidates}
        architecture = cols[1].selectbox("Architecture", [*shown, OTHER], key=f"import-pick-{key}",
                                         format_func=lambda a: shown.get(a, a))
    else:
        architecture = OTHER
    if architecture == OTHER:
        architecture = cols[1].text_input("Architecture" if not best else "Other architecture",
                                          value=hp.get("architecture", ""), key=f"import-arch-{key}",
                                          placeholder="torchvision name, timm/<name> or smp/<Arch>")
    num_classes = cols[2].number_input("Classes", min_value=0, value=int(hp.get("num_classes") or best.get(
        "num_classes") or 0), key=f"import-classes-{key}", help="0 = from the file or the weights")
    size = hp.get("input_size") or best.get("input_size")
    input_size = cols[3].text_input("Input size C,H,W", value=",".join(map(str, size)) if size else "",
                                    key=f"import-size-{key}", placeholder="3,224,224")
    options = {}
    if architecture.startswith("smp/") and not hp.get("architecture"):  # a state dict: smp needs its encoder
        options["encoder"] = st.text_input("Encoder", key=f"import-encoder-{key}", placeholder="resnet34",
                                           help="the smp encoder the model was built with") or ""
    left, right = st.columns(2)
    class_names = left.text_input("Class names", key=f"import-names-{key}", placeholder="cat,dog,… (default: from "
                                  "the file)", value=",".join(hp.get("class_names") or []))
    name = right.text_input("Experiment name", key=f"import-name-{key}", placeholder=Path(about["filename"]).stem)
    code = _code_fields(key) if not hp.get("architecture", "").startswith("program/") else {}
    try:
        parsed_size = parse_input_size(input_size)
        kwargs = parse_json_object(code.get("model_kwargs"), "Class kwargs")
    except ExportError as exc:
        st.error(exc.message)
        return None
    if code.get("model_code") and architecture == OTHER:
        architecture = ""
    return {"task": task, "architecture": architecture.strip() or None, "num_classes": num_classes or None,
            "input_size": parsed_size, "name": name.strip() or None, "options": options,
            "class_names": parse_class_names(class_names), **code, "model_kwargs": kwargs}


def _code_fields(key: str) -> dict[str, Any]:
    """The user's own model class, where this server runs model code (``AISTUDIO_ALLOW_MODEL_CODE=1``)."""
    if not code_allowed():
        st.caption("Built by your own model class? This server does not run model code: start it with "
                   f"`{ALLOW_ENV}=1`, or import from the CLI with `--model-code path/to/model.py:ClassName`.")
        return {}
    if not st.toggle("Built by my own model code", key=f"import-code-on-{key}",
                     help="the file (or the package, as a .zip) is copied into the project and the checkpoint, and "
                          "every export imports it from there"):
        return {}
    cols = st.columns(3)
    upload = cols[0].file_uploader("Model code (.py, or a .zip of the package)", type=["py", "zip"],
                                   key=f"import-code-file-{key}")
    entry = cols[1].text_input("Class", key=f"import-code-class-{key}", placeholder="model.py:MyModel or "
                               "package.module:MyModel")
    kwargs = cols[2].text_input("Class kwargs (JSON)", key=f"import-code-kwargs-{key}",
                                placeholder='{"num_classes": 3} (default: a Lightning checkpoint\'s saved ones)')
    if upload is None or not entry.strip():
        st.caption("Choose the code file and name its class.")
        return {"model_code": None}
    return {"model_code": entry.strip(), "model_kwargs": kwargs or None, "code_file": upload}


def import_with_code(workspace: Any, request: Any, upload_id: str, code_file: Any | None) -> dict[str, Any]:
    """``import_staged``, with the model code the form took (a .py or a package .zip) as the request's code root."""
    import dataclasses

    from exporter.importer import import_staged, sent_code

    request = dataclasses.replace(request, allow_code=code_allowed())
    if code_file is None:
        return import_staged(workspace, request, upload_id)
    with sent_code(workspace.root, code_file.name, code_file.getvalue()) as folder:
        return import_staged(workspace, dataclasses.replace(request, code_root=str(folder)), upload_id)


def import_notice(experiment: dict[str, Any], project_id: str) -> str:
    """One line saying what was imported (shown here and on the Export page it links to)."""
    model, detected = experiment["model"], experiment["detected"]
    return (f"Imported `{experiment['id']}` into `{project_id}`: {model['task']} · `{model['architecture']}` · "
            f"{model.get('num_classes')} classes · input {model.get('input_size')}"
            + (f" (detected from the weights, {detected[0]['confidence']:.0%} match)" if detected else ""))
