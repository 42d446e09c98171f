"""HTTP API under ``/api``, served by the dashboard's own process (DESIGN.md §7).

Every error answers ``{"error": {"type", "message"}}`` with a 4xx status (a 500 never carries
a traceback). When ``AISTUDIO_API_TOKEN`` is set, every route requires
``Authorization: Bearer <token>`` — except the two routes the dashboard's own browser widgets call,
which also take the page's ticket (:func:`page_ticket`): ``POST /api/uploads`` as the
``X-Upload-Ticket`` header, ``GET /api/export/{id}/download`` as ``?ticket=`` (a link cannot send headers).
"""

from __future__ import annotations

import hmac
import io
import os
import secrets
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Mount

from exporter import __version__
from exporter.errors import ExportError, NotFoundError, one_line
from exporter.store import all_exports, find_export
from exporter.workspace import Workspace

MAX_BODY_BYTES = 1 << 20
TOKEN_ENV = "AISTUDIO_API_TOKEN"
CHUNK = 1 << 20
TICKET_TTL_S = 12 * 3600
_TICKETS: dict[str, float] = {}  # page ticket → expiry (this process only: the dashboard serves the API)
# Streamlit's gzip middleware would re-encode model files (dropping Content-Length and Range,
# burning CPU on GBs); it leaves responses that already declare an encoding alone.
NO_GZIP = {"Content-Encoding": "identity"}


class ExportBody(BaseModel):
    """Body of ``POST /api/export``."""

    model_config = ConfigDict(extra="forbid")
    project_id: str = Field(max_length=128)
    experiment_id: str = Field(max_length=128)
    checkpoint: str = Field("best", max_length=16)
    format: str = Field("onnx", max_length=32)
    options: dict[str, Any] = Field(default_factory=dict)


def _error(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"type": kind, "message": message}}, status_code=status)


def page_ticket() -> str | None:
    """A ticket that lets the dashboard's browser widgets stream a file to ``POST /api/uploads`` and
    download from ``GET /api/export/{id}/download`` when the API requires a token (the token itself
    never reaches the page); ``None`` when none is set."""
    if not os.environ.get(TOKEN_ENV):
        return None
    now = time.time()
    for stale in [t for t, expiry in _TICKETS.items() if expiry < now]:
        _TICKETS.pop(stale, None)
    ticket = secrets.token_urlsafe(24)
    _TICKETS[ticket] = now + TICKET_TTL_S
    return ticket


def _require_token(request: Request) -> None:
    token = os.environ.get(TOKEN_ENV)
    if not token:
        return
    if _TICKETS.get(_page_ticket_of(request), 0) > time.time():
        return
    given = request.headers.get("authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        raise _ApiError(401, "Unauthorized", f"Send 'Authorization: Bearer <token>' (set by {TOKEN_ENV}).")


def _page_ticket_of(request: Request) -> str:
    """The ticket a page widget sent, on the only routes that take one ("" elsewhere)."""
    path = request.url.path
    if request.method == "POST" and path.endswith("/uploads"):
        return request.headers.get("x-upload-ticket", "")
    if request.method == "GET" and path.endswith("/download"):
        return request.query_params.get("ticket", "")
    return ""


class _ApiError(Exception):
    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


def workspace() -> Workspace:
    """The workspace each request works on (from ``$AISTUDIO_WORKSPACE``)."""
    return Workspace()


def create_api() -> FastAPI:
    """The FastAPI application mounted at ``/api``."""
    api = FastAPI(title="AI Studio Export API", version=__version__, docs_url="/docs",
                  openapi_url="/openapi.json", redoc_url=None, dependencies=[Depends(_require_token)])
    _install_error_handlers(api)

    @api.middleware("http")
    async def cap_body(request: Request, call_next):
        from exporter.checkpoint import max_checkpoint_bytes

        upload = request.method == "POST" and request.url.path.endswith(("/experiments", "/uploads"))
        limit = max_checkpoint_bytes() + MAX_BODY_BYTES if upload else MAX_BODY_BYTES
        length = request.headers.get("content-length")
        if length and (not length.isdigit() or int(length) > limit):
            return _error(413, "PayloadTooLarge", f"Request body over {limit} bytes.")
        return await call_next(request)

    @api.get("/formats", summary="Export formats, their availability and options (plus a task's options)")
    def formats(task: str | None = None) -> list[dict[str, Any]]:
        from exporter.formats import get_available_formats
        from exporter.models.task_options import task_option_specs

        extra = [spec.describe() for spec in task_option_specs(task)]
        return [{**row, "options": row["options"] + extra} for row in get_available_formats(task)]

    @api.get("/projects", summary="Projects with their experiments and checkpoints")
    def projects() -> list[dict[str, Any]]:
        return [project_tree(p) for p in workspace().projects()]

    @api.post("/uploads", status_code=201,
              summary="Stream a checkpoint to the server (raw body) and stage it for import as upload_id")
    async def upload(request: Request, filename: str = Query("checkpoint.ckpt", max_length=255)) -> dict[str, Any]:
        from exporter.importer import keep_upload, receive_upload

        root = workspace().root
        with receive_upload(root) as (path, sink):
            async for chunk in request.stream():
                sink(chunk)
            return keep_upload(root, path, filename)

    @api.post("/projects/{project_id}/experiments", status_code=201,
              summary="Import a checkpoint as a new experiment (multipart `file`, or `upload_id` from /uploads)")
    async def import_experiment(
            project_id: str, file: Annotated[UploadFile | None, File()] = None,
            upload_id: Annotated[str | None, Form()] = None, task: Annotated[str | None, Form()] = None,
            architecture: Annotated[str | None, Form()] = None, num_classes: Annotated[int | None, Form()] = None,
            input_size: Annotated[str | None, Form()] = None, name: Annotated[str | None, Form()] = None,
            create_project: Annotated[bool, Form()] = False,
            project_name: Annotated[str | None, Form()] = None) -> dict[str, Any]:
        from starlette.concurrency import run_in_threadpool

        from exporter.errors import UsageError
        from exporter.importer import ImportRequest, import_checkpoint, import_staged, parse_input_size, receive_upload

        if (file is None) == (upload_id is None):
            raise UsageError("Send the checkpoint as the multipart field `file`, or `upload_id` from "
                             "POST /api/uploads (one of the two).")
        request = ImportRequest(project_id, task=task or None, architecture=architecture or None,
                                num_classes=num_classes, input_size=parse_input_size(input_size), name=name or None,
                                create_project=create_project, project_name=project_name or None)
        if upload_id is not None:
            return await run_in_threadpool(import_staged, workspace(), request, upload_id)
        with receive_upload(workspace().root) as (path, sink):
            while chunk := await file.read(1 << 20):
                sink(chunk)
            return await run_in_threadpool(import_checkpoint, workspace(), request, path, file.filename)

    @api.get("/exports", summary="Export summaries, newest first")
    def exports(project_id: str | None = Query(None, max_length=128)) -> list[dict[str, Any]]:
        from exporter.jobs import recover_interrupted

        recover_interrupted(workspace())  # a worker that died shows as Interrupted, not running
        return all_exports(workspace(), project_id)

    @api.post("/export", status_code=202, summary="Start an export in the background")
    def start(body: ExportBody) -> dict[str, Any]:
        from exporter.jobs import start_export
        from exporter.service import ExportRequest

        return start_export(workspace(), ExportRequest(**body.model_dump()))

    @api.get("/export/{export_id}", summary="An export's record")
    def record(export_id: str) -> dict[str, Any]:
        from exporter.jobs import refresh

        return refresh(workspace(), export_id)

    @api.get("/export/{export_id}/download", summary="The exported file, streamed")
    def download(export_id: str):
        return download_response(export_id)

    @api.delete("/export/{export_id}", summary="Delete an export (cancels it first if running)")
    def delete(export_id: str) -> dict[str, Any]:
        from exporter.jobs import cancel_export

        cancel_export(workspace(), export_id)
        store, _ = find_export(workspace(), export_id)
        store.delete(export_id)
        return {"deleted": export_id}

    return api


def _install_error_handlers(api: FastAPI) -> None:
    @api.exception_handler(ExportError)
    async def export_error(_: Request, exc: ExportError) -> JSONResponse:
        return _error(exc.http_status, type(exc).__name__, exc.message)

    @api.exception_handler(_ApiError)
    async def api_error(_: Request, exc: _ApiError) -> JSONResponse:
        return _error(exc.status, exc.kind, exc.message)

    @api.exception_handler(RequestValidationError)
    async def bad_body(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, e.get('loc', ())[1:])) or 'body'}: {e.get('msg')}"
                             for e in exc.errors()[:5])
        return _error(422, "InvalidRequest", problems or "The request body is not valid JSON.")

    @api.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, "HTTPError", str(exc.detail))

    @api.exception_handler(Exception)
    async def internal(_: Request, exc: Exception) -> JSONResponse:
        return _error(500, "InternalError", one_line(exc, 200))


def project_tree(project: Any) -> dict[str, Any]:
    """A project with its experiments and their checkpoints (JSON)."""
    return {**project.meta, "id": project.id, "name": project.name, "task": project.task,
            "experiments": [{
                "id": e.id, "name": e.name, "task": e.task, "model": e.model, "metrics": e.metrics,
                "checkpoints": [{"name": c.name, "epoch": c.epoch, "metric": c.metric,
                                 "size_bytes": c.size_bytes} for c in e.checkpoints()],
            } for e in project.experiments()]}


def export_files(export_id: str) -> tuple[dict[str, Any], list[Path]]:
    """A completed export's record and its files, each checked to lie inside its folder.

    Raises:
        NotFoundError: unknown id or a file that is missing or escapes the folder.
        _ApiError: the export is not completed (409).
    """
    store, record = find_export(workspace(), export_id)
    if record.get("status") != "completed":
        raise _ApiError(409, "NotReady",
                        f"Export {export_id} is {record.get('status')}; only completed exports download.")
    folder = store.export_dir(export_id).resolve()
    paths = []
    for entry in record.get("files") or []:
        path = folder / str(entry.get("name"))
        if path.is_symlink() or path.resolve().parent != folder or not path.is_file():
            raise NotFoundError(f"File {entry.get('name')!r} of {export_id} is not available.")
        paths.append(path)
    if not paths:
        raise NotFoundError(f"Export {export_id} has no files.")
    return record, paths


def download_response(export_id: str):
    """A streamed file (with Range and ETag) or, for several files, a streamed zip."""
    record, paths = export_files(export_id)
    if len(paths) == 1:
        sha = record["files"][0]["sha256"]
        response = FileResponse(paths[0], filename=paths[0].name, media_type="application/octet-stream",
                                headers=NO_GZIP)
        response.headers["etag"] = f'"{sha}"'
        return response
    name = f"{export_id}-{record.get('format')}.zip"
    return StreamingResponse(iter_zip(paths), media_type="application/zip",
                             headers={"Content-Disposition": f'attachment; filename="{name}"', **NO_GZIP})


class _Sink(io.RawIOBase):
    """A write-only, unseekable stream whose written bytes are drained by a generator."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.chunks.append(bytes(data))
        return len(data)

    def drain(self) -> Iterator[bytes]:
        chunks, self.chunks = self.chunks, []
        yield from chunks


def iter_zip(paths: list[Path]) -> Iterator[bytes]:
    """Stream a stored (uncompressed) zip of ``paths`` with bounded memory."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED) as archive:
        for path in paths:
            with archive.open(path.name, "w", force_zip64=True) as dest, open(path, "rb") as src:
                while block := src.read(CHUNK):
                    dest.write(block)
                    yield from sink.drain()
    yield from sink.drain()


def api_routes() -> list[BaseRoute]:
    """Routes for ``st.App``: the API mounted at ``/api`` (recovering interrupted exports first)."""
    from exporter.jobs import recover_interrupted

    try:
        recover_interrupted(workspace())
    except ExportError:
        pass
    return [Mount("/api", app=create_api())]
