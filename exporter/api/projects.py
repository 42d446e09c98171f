"""``/api/projects``: projects with their experiments, and importing a checkpoint as an experiment."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile
from starlette.concurrency import run_in_threadpool

from exporter.api.app_state import workspace
from exporter.errors import UsageError

router = APIRouter()


@router.get("/projects", summary="Projects with their experiments and checkpoints")
def list_projects() -> list[dict[str, Any]]:
    return [p.describe() for p in workspace().projects()]


@router.post("/projects/{project_id}/experiments", status_code=201,
             summary="Import a checkpoint as a new experiment (multipart `file`, or `upload_id` from /uploads)")
async def import_experiment(
        project_id: str, file: Annotated[UploadFile | None, File()] = None,
        upload_id: Annotated[str | None, Form()] = None, task: Annotated[str | None, Form()] = None,
        architecture: Annotated[str | None, Form()] = None, num_classes: Annotated[int | None, Form()] = None,
        input_size: Annotated[str | None, Form()] = None, name: Annotated[str | None, Form()] = None,
        create_project: Annotated[bool, Form()] = False,
        project_name: Annotated[str | None, Form()] = None,
        options: Annotated[str | None, Form(description="smp/<Arch> state dicts: encoder=<name>[,encoder_depth=<n>]")]
        = None, class_names: Annotated[str | None, Form(description="comma-separated")] = None,
        normalization: Annotated[str | None, Form(description="imagenet, none or a JSON {mean, std}")] = None,
        model_code: Annotated[str | None, Form(description="FILE.py:Class or package.module:Class in `code` (needs "
                                                           "AISTUDIO_ALLOW_MODEL_CODE=1)")] = None,
        model_kwargs: Annotated[str | None, Form(description="JSON object")] = None,
        code: Annotated[UploadFile | None, File(description="the model code: a .py file or a .zip of a package")]
        = None) -> dict[str, Any]:
    from exporter.families.code import code_allowed, refuse_code
    from exporter.importer import (
        ImportRequest,
        parse_class_names,
        parse_input_size,
        parse_json_object,
        parse_normalization,
    )
    from exporter.options import parse_key_values

    if (file is None) == (upload_id is None):
        raise UsageError("Send the checkpoint as the multipart field `file`, or `upload_id` from "
                         "POST /api/uploads (one of the two).")
    if (model_code or code) and not code_allowed():
        raise refuse_code()
    if bool(model_code) != (code is not None):
        raise UsageError("Model code comes as the form field `model_code` (FILE.py:Class or package.module:Class) "
                         "with the multipart file `code` (the .py or a .zip of the package): send both.")
    request = ImportRequest(project_id, task=task or None, architecture=architecture or None,
                            num_classes=num_classes, input_size=parse_input_size(input_size), name=name or None,
                            create_project=create_project, project_name=project_name or None,
                            options=parse_key_values(p for p in (options or "").split(",") if p.strip()),
                            class_names=parse_class_names(class_names),
                            normalization=parse_normalization(normalization), model_code=model_code or None,
                            model_kwargs=parse_json_object(model_kwargs, "model_kwargs"), allow_code=code_allowed())
    if code is None:
        return await _imported(request, file, upload_id)
    from exporter.importer import sent_code

    with sent_code(workspace().root, code.filename or "", await code.read()) as folder:
        return await _imported(dataclasses.replace(request, code_root=str(folder)), file, upload_id)


async def _imported(request: Any, file: UploadFile | None, upload_id: str | None) -> dict[str, Any]:
    from exporter.importer import import_checkpoint, import_staged, receive_upload

    if upload_id is not None:
        return await run_in_threadpool(import_staged, workspace(), request, upload_id)
    with receive_upload(workspace().root) as (path, sink):
        while chunk := await file.read(1 << 20):
            sink(chunk)
        return await run_in_threadpool(import_checkpoint, workspace(), request, path, file.filename)


@router.post("/projects/{project_id}/datasets", status_code=201,
             summary="Make a staged upload (a .zip from POST /api/uploads) the project's labelled set, data/val")
async def attach_dataset(project_id: str, upload_id: Annotated[str, Form()]) -> dict[str, Any]:
    from exporter.dataset_attach import attach_staged

    return await run_in_threadpool(attach_staged, workspace(), project_id, upload_id)
