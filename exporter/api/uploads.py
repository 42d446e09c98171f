"""``POST /api/uploads``: a file streamed as the raw request body to disk, staged for import."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request

from exporter.api.app_state import workspace

router = APIRouter()


@router.post("/uploads", status_code=201,
             summary="Stream a checkpoint to the server (raw body) and stage it for import as upload_id")
async def upload(request: Request, filename: str = Query("checkpoint.ckpt", max_length=255)) -> dict[str, Any]:
    from exporter.importer import keep_upload, receive_upload

    root = workspace().root
    with receive_upload(root) as (path, sink):
        async for chunk in request.stream():
            sink(chunk)
        return keep_upload(root, path, filename)
