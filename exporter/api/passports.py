"""``/api/verify`` and ``/api/signing-key``: check a signed export, hand out the key exports are signed with."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from exporter.api.app_state import workspace

router = APIRouter()


class VerifyBody(BaseModel):
    """Body of ``POST /api/verify``: a staged upload (``POST /api/uploads``) of a zip, and optionally the key."""

    model_config = ConfigDict(extra="forbid")
    upload_id: str = Field(max_length=64)
    public_key: str | None = Field(None, max_length=16_384, description="the signer's public key (PEM); default: "
                                                                        "this workspace's")
    rerun: bool = False


@router.post("/verify", summary="Verify a signed export (a staged zip): signature, every file, the passport; "
             "rerun the golden samples")
def verify_upload(body: VerifyBody) -> dict[str, Any]:
    from exporter.importer import staged_upload
    from exporter.verify import verify

    root = workspace().root
    path, _ = staged_upload(root, body.upload_id)
    key = body.public_key.encode() if body.public_key else None
    return verify(path, key, body.rerun, root)


@router.get("/signing-key", summary="The public key (PEM) this workspace signs its exports with",
            response_class=PlainTextResponse)
def signing_key() -> str:
    from exporter.passport import workspace_public_key

    return workspace_public_key(workspace().root).decode()
